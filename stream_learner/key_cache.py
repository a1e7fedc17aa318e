"""Key models in memory: at most ``size`` of them, the least recently used out first, except
those changed since their partition's last checkpoint (dirty), which stay until it is saved.

>>> cache = KeyCache(2)
>>> cache.put(0, "a", "A", changed=True); cache.put(0, "b", "B")
>>> cache.put(0, "c", "C")  # "a" is dirty, so "b" goes
>>> cache.get(0, "b"), cache.get(0, "a"), cache.evicted, sorted(cache.dirty[0])
(None, 'A', 1, ['a'])
>>> cache.saved(0, ["a"]); cache.dirty
{}
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class KeyCache(Generic[T]):
    def __init__(self, size: int) -> None:
        self.size = size
        self.entries: OrderedDict[tuple[int, str], T] = OrderedDict()
        self.dirty: dict[int, set[str]] = {}  # partition -> keys changed since its checkpoint
        self.hits = self.misses = self.evicted = 0

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, partition: int, key: str) -> T | None:
        found = self.entries.get((partition, key))
        if found is None:
            self.misses += 1
            return None
        self.hits += 1
        self.entries.move_to_end((partition, key))
        return found

    def has(self, partition: int, key: str) -> bool:
        return (partition, key) in self.entries

    def put(self, partition: int, key: str, value: T, *, changed: bool = False) -> None:
        """Keep ``value``, the most recent now; ``changed``: until its partition's checkpoint."""
        self.entries[partition, key] = value
        self.entries.move_to_end((partition, key))
        if changed:
            self.dirty.setdefault(partition, set()).add(key)
        self._evict()

    def dirty_count(self) -> int:
        return sum(len(keys) for keys in self.dirty.values())

    def models(self, partition: int, keys: Iterable[str]) -> dict[str, T]:
        return {k: self.entries[partition, k] for k in keys}

    def saved(self, partition: int, keys: Iterable[str]) -> None:
        """The partition's checkpoint holds these keys' models now."""
        dirty = self.dirty.get(partition)
        if dirty is not None:
            dirty.difference_update(keys)
            if not dirty:
                del self.dirty[partition]
        self._evict()

    def drop(self, partition: int) -> None:
        """Forget the partition's keys (it went to another learner)."""
        self.dirty.pop(partition, None)
        for entry in [e for e in self.entries if e[0] == partition]:
            del self.entries[entry]

    def _evict(self) -> None:
        """Down to ``size``, clean entries only: a dirty one is kept (moved to the end)."""
        budget = len(self.entries)
        while len(self.entries) > self.size and budget > 0:
            budget -= 1
            (partition, key), value = self.entries.popitem(last=False)
            if key in self.dirty.get(partition, ()):
                self.entries[partition, key] = value
            else:
                self.evicted += 1
