"""The in-memory twin of the Redis store, for unit tests: the same rules, no server.

>>> store = MemoryStore()
>>> token = store.acquire("m", ttl=10.0, owner="host-a")
>>> store.save("m", 1, Record(b"{}", b"", "sig"), token, keep=2)
>>> store.latest_version("m"), store.acquire("m", ttl=10.0, owner="host-b")
(1, None)
>>> successor = store.acquire("m", ttl=10.0, owner="host-a")  # host-a restarted: no wait
>>> store.save("m", 2, Record(b"{}", b"", "sig"), token, keep=2)
Traceback (most recent call last):
...
stream_learner.errors.FencedError: model m: fencing token 1 is stale (current 2): another learner took over
"""

from __future__ import annotations

import time

from stream_learner.checkpoint import Record
from stream_learner.errors import NoCheckpoint
from stream_learner.state.base import Serving, fenced, held, missing, out_of_order


class MemoryStore:
    """The in-memory twin of ``RedisStore``: same rules, no server."""

    shared = False

    def __init__(self) -> None:
        self.records: dict[str, dict[int, Record]] = {}
        self.fences: dict[str, int] = {}
        self.leases: dict[str, tuple[str, float]] = {}  # model -> (owner, expires at)
        self.requests: dict[str, bytes] = {}
        self.serving: dict[str, Serving] = {}
        self.tag_map: dict[str, dict[str, int]] = {}

    def _holder(self, model: str) -> str | None:
        owner, expires = self.leases.get(model, ("", 0.0))
        return owner if expires > time.monotonic() else None

    def clone(self) -> MemoryStore:
        return self  # its data lives in this object

    def acquire(self, model: str, ttl: float, owner: str = "") -> int | None:
        if self._holder(model) not in (None, owner):
            return None
        self.fences[model] = self.fences.get(model, 0) + 1
        self.leases[model] = (owner, time.monotonic() + ttl)
        return self.fences[model]

    def renew(self, model: str, token: int, ttl: float, owner: str = "") -> None:
        current = self.fences.get(model, 0)
        if token != current:
            raise fenced(model, token, current)
        self.leases[model] = (owner, time.monotonic() + ttl)

    def release(self, model: str, token: int, owner: str = "") -> None:
        if self._holder(model) == owner and self.fences.get(model) == token:
            del self.leases[model]

    def save(self, model: str, version: int, record: Record, token: int, keep: int, *,
             serve: bool = True, reclaim: bool = False) -> None:
        current = self.fences.get(model, 0)
        if token != current:
            raise fenced(model, token, current)
        latest = self.latest_version(model)
        if version != latest + 1:
            raise out_of_order(model, version, latest)
        kept = self.records.setdefault(model, {})
        kept[version] = record
        by = self.serving[model].by if model in self.serving else ""
        if (serve and by in ("", "learner")) or (reclaim and by == "rollback"):
            self.serving[model] = Serving(version, "learner", time.time(), "")
        protected = {*self.tag_map.get(model, {}).values(),
                     *([self.serving[model].version] if model in self.serving else [])}
        for old in sorted(kept)[:-keep]:
            if old not in protected:
                del kept[old]

    def latest_version(self, model: str) -> int:
        return max(self.records.get(model, {}), default=0)

    def load(self, model: str, version: int = 0) -> Record:
        version = version or self.latest_version(model)
        try:
            return self.records[model][version]._replace(model=model, version=version)
        except KeyError:
            raise NoCheckpoint(missing(model, version)) from None

    def versions(self, model: str) -> list[int]:
        return sorted(self.records.get(model, {}))

    def models(self) -> list[str]:
        return sorted(m for m, kept in self.records.items() if kept)

    def reset(self, model: str) -> int:
        holder = self._holder(model)
        if holder is not None:
            raise held(model, holder)
        self.requests.pop(model, None)
        self.serving.pop(model, None)
        self.tag_map.pop(model, None)
        return len(self.records.pop(model, {}))

    def served(self, model: str) -> Serving:
        return self.serving.get(model) or Serving(self.latest_version(model), "", 0.0, "")

    def serve(self, model: str, version: int, *, by: str, reason: str = "") -> None:
        version = version or self.latest_version(model)
        if version not in self.records.get(model, {}):
            raise NoCheckpoint(missing(model, version))
        self.serving[model] = Serving(version, by, time.time(), reason)

    def tag(self, model: str, name: str, version: int) -> None:
        if version not in self.records.get(model, {}):
            raise NoCheckpoint(missing(model, version))
        self.tag_map.setdefault(model, {})[name] = version

    def untag(self, model: str, name: str) -> bool:
        return self.tag_map.get(model, {}).pop(name, None) is not None

    def tags(self, model: str) -> dict[str, int]:
        return dict(self.tag_map.get(model, {}))

    def request(self, model: str, doc: bytes) -> None:
        self.requests[model] = doc

    def requested(self, model: str) -> bytes | None:
        return self.requests.get(model)
