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
from stream_learner.state.base import fenced, held, missing, out_of_order


class MemoryStore:
    """The in-memory twin of ``RedisStore``: same rules, no server."""

    shared = False

    def __init__(self) -> None:
        self.records: dict[str, dict[int, Record]] = {}
        self.fences: dict[str, int] = {}
        self.leases: dict[str, tuple[str, float]] = {}  # model -> (owner, expires at)

    def _holder(self, model: str) -> str | None:
        owner, expires = self.leases.get(model, ("", 0.0))
        return owner if expires > time.monotonic() else None

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

    def save(self, model: str, version: int, record: Record, token: int, keep: int) -> None:
        current = self.fences.get(model, 0)
        if token != current:
            raise fenced(model, token, current)
        latest = self.latest_version(model)
        if version != latest + 1:
            raise out_of_order(model, version, latest)
        kept = self.records.setdefault(model, {})
        kept[version] = record
        for old in sorted(kept)[:-keep]:
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
        return len(self.records.pop(model, {}))
