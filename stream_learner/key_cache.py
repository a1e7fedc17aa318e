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
        self._read: set[tuple[int, str]] = set()  # read from the store ahead, not asked for yet
        self.hits = self.misses = self.evicted = 0

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, partition: int, key: str) -> T | None:
        """The key's value, counted a hit; a miss when it is not here, or was read from the
        store ahead of this ask (``put(read=True)``)."""
        entry = (partition, key)
        found = self.entries.get(entry)
        if found is None:
            self.misses += 1
            return None
        if entry in self._read:
            self._read.discard(entry)
            self.misses += 1
        else:
            self.hits += 1
        self.entries.move_to_end(entry)
        return found

    def has(self, partition: int, key: str) -> bool:
        return (partition, key) in self.entries

    def put(self, partition: int, key: str, value: T, *, changed: bool = False, read: bool = False) -> None:
        """Keep ``value``, the most recent now; ``changed``: until its partition's checkpoint;
        ``read``: read from the store ahead of its first ask, which counts as the miss."""
        self.entries[partition, key] = value
        self.entries.move_to_end((partition, key))
        if changed:
            self.dirty.setdefault(partition, set()).add(key)
        if read:
            self._read.add((partition, key))
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
            self.forget(*entry)

    def forget(self, partition: int, key: str) -> None:
        """Let one clean entry go (a newer version changed it)."""
        self.entries.pop((partition, key), None)
        self._read.discard((partition, key))

    def _evict(self) -> None:
        """Down to ``size``, clean entries only: a dirty one is kept (moved to the end)."""
        budget = len(self.entries)
        while len(self.entries) > self.size and budget > 0:
            budget -= 1
            (partition, key), value = self.entries.popitem(last=False)
            if key in self.dirty.get(partition, ()):
                self.entries[partition, key] = value
            else:
                self._read.discard((partition, key))
                self.evicted += 1
