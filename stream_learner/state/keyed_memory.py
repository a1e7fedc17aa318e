"""The in-memory twin of the Redis keyed store, for unit tests: the same rules, no server.

>>> from stream_learner.checkpoint import Record
>>> store = MemoryKeyedStore()
>>> token = store.claim("m", 0)
>>> store.save_partition("m", PartitionSave(0, 1, token, Record(b"{}", b"", "s"), {"a": b"A"}, {"a": 5}))
0
>>> store.key_models("m", 0, ["a", "b"]), store.versions("m", [0, 1])
([b'A', None], {0: 1, 1: 0})
>>> store.claim("m", 0) > token  # a new owner: the old one is fenced
True
"""

from __future__ import annotations

from collections.abc import Sequence

from stream_learner.checkpoint import Record
from stream_learner.state.base import fenced, out_of_order
from stream_learner.state.keyed_base import CHANGES_KEPT, SWEEP_LIMIT, PartitionSave, reaches_back


class _Partition:
    def __init__(self) -> None:
        self.fence = 0
        self.version = 0
        self.record: Record | None = None
        self.models: dict[str, bytes] = {}
        self.seen: dict[str, int] = {}
        self.changed: dict[str, int] = {}


class MemoryKeyedStore:
    shared = False

    def __init__(self) -> None:
        self.parts: dict[tuple[str, int], _Partition] = {}

    def _part(self, model: str, partition: int) -> _Partition:
        return self.parts.setdefault((model, partition), _Partition())

    def claim(self, model: str, partition: int) -> int:
        part = self._part(model, partition)
        part.fence += 1
        return part.fence

    def partition(self, model: str, partition: int) -> Record | None:
        return self._part(model, partition).record

    def save_partition(self, model: str, save: PartitionSave) -> int:
        part, where = self._part(model, save.partition), f"{model}#{save.partition}"
        if save.token != part.fence:
            raise fenced(where, save.token, part.fence)
        if save.version != part.version + 1:
            raise out_of_order(where, save.version, part.version)
        part.version, part.record = save.version, save.record._replace(model=where, version=save.version)
        for key, blob in save.models.items():
            part.models[key] = blob
            part.seen[key] = save.seen[key]
            part.changed[key] = save.version
        idle = sorted((k for k, ts in part.seen.items() if ts < save.expire_before),
                      key=lambda k: (part.seen[k], k))[:SWEEP_LIMIT] if save.expire_before else []
        for key in idle:
            del part.models[key], part.seen[key]
            part.changed[key] = save.version
        part.changed = {k: v for k, v in part.changed.items() if v >= save.version - CHANGES_KEPT}
        return len(idle)

    def key_models(self, model: str, partition: int, keys: Sequence[str]) -> list[bytes | None]:
        models = self._part(model, partition).models
        return [models.get(k) for k in keys]

    def versions(self, model: str, partitions: Sequence[int]) -> dict[int, int]:
        return {p: self._part(model, p).version for p in partitions}

    def changed(self, model: str, partition: int, after: int, upto: int) -> list[str] | None:
        if reaches_back(after, upto):
            return None
        return sorted(k for k, v in self._part(model, partition).changed.items() if after < v <= upto)

    def key_count(self, model: str, partition: int) -> int:
        return len(self._part(model, partition).models)

    def key_names(self, model: str, partition: int) -> list[str]:
        return sorted(self._part(model, partition).models)

    def models(self) -> list[str]:
        return sorted({m for (m, _), part in self.parts.items() if part.fence})

    def partitions(self, model: str) -> list[int]:
        return sorted(p for (m, p), part in self.parts.items() if m == model and part.fence)

    def reset_partition(self, model: str, partition: int) -> int:
        part = self._part(model, partition)
        deleted, fence = len(part.models), part.fence + 1
        self.parts[(model, partition)] = _Partition()
        self.parts[(model, partition)].fence = fence
        return deleted
