"""A frozen predictor's key models under key scope: a cache in front of the store that follows
each partition's new versions.

``refresh`` asks the store for the partitions' versions; for each partition that moved, it
drops from the cache exactly the keys its new versions changed (all of the partition's, when
the versions kept do not reach back that far) and reloads the partition's state, whose prior a
new key starts from. A key's model is served with the version of the partition it was read
at. The loop and the HTTP server's threads share it: a lock guards the cache.
"""

from __future__ import annotations

import threading

from stream_learner.checkpoint import spec_package
from stream_learner.config import Settings
from stream_learner.key_cache import KeyCache
from stream_learner.key_records import key_slot, open_key, open_partition
from stream_learner.keyed import KeyedEngine, KeyModel, PartitionState
from stream_learner.state.keyed_base import KeyedStore

Served = tuple[KeyModel, int]  # a key's model and the version of its partition it was read at


class FrozenKeys:
    def __init__(self, settings: Settings, store: KeyedStore, engine: KeyedEngine) -> None:
        self.settings = settings
        self.store = store
        self.engine = engine
        self.cache: KeyCache[Served] = KeyCache(settings.key_cache_size)
        self.parts: dict[int, tuple[int, PartitionState]] = {}  # partition -> (version, state)
        self.reloads = 0  # partitions reloaded at a new version
        self._lock = threading.Lock()

    def version(self, partition: int) -> int:
        found = self.parts.get(partition)
        return found[0] if found is not None else 0

    def follow(self, partitions: list[int]) -> None:
        """Serve these partitions (an assignment): their states as the store has them now."""
        for p in partitions:
            if p not in self.parts:
                self._load_partition(p)

    def _load_partition(self, partition: int) -> None:
        s = self.settings
        record = self.store.partition(s.model, partition)
        if record is None:
            state = (0, self.engine.fresh_partition())
        else:
            meta, part = open_partition(record, s.signing_keys(), trusted=s.trusted_packages(),
                                        allow_version_mismatch=s.allow_version_mismatch)
            state = (meta.version, part)
        with self._lock:
            self.parts[partition] = state

    def refresh(self) -> int:
        """Follow the partitions' new versions; the number of partitions that moved."""
        s, moved = self.settings, 0
        for p, latest in self.store.versions(s.model, sorted(self.parts)).items():
            seen = self.version(p)
            if latest == seen:
                continue
            changed = self.store.changed(s.model, p, seen, latest) if latest > seen else None
            self._load_partition(p)
            with self._lock:
                if changed is None:
                    self.cache.drop(p)
                else:
                    for key in changed:
                        self.cache.forget(p, key)
            moved += 1
        self.reloads += moved
        return moved

    def prefetch(self, partition: int, keys: list[str]) -> None:
        """The keys' models missing from the cache, in one store read."""
        with self._lock:
            missing = [k for k in dict.fromkeys(keys) if not self.cache.has(partition, k)]
        if missing:
            version = self.version(partition)
            found = self.store.key_models(self.settings.model, partition, missing)
            for key, blob in zip(missing, found, strict=True):
                self._keep(partition, key, blob, version, ahead=True)

    def model(self, partition: int, key: str) -> Served:
        """The key's model as the store has it (a new key's: what it would start from)."""
        with self._lock:
            found = self.cache.get(partition, key)
        if found is None:
            version = self.version(partition)
            blob = self.store.key_models(self.settings.model, partition, [key])[0]
            found = self._keep(partition, key, blob, version)
        return found

    def _keep(self, partition: int, key: str, blob: bytes | None, version: int, *, ahead: bool = False
              ) -> Served:
        s = self.settings
        if blob is None:
            with self._lock:
                part = self.parts.get(partition)
            served = (self.engine.started(part[1]) if part else self.engine.fresh_model(), version)
        else:
            package = spec_package(s.model_spec)
            model = open_key(blob, slot=key_slot(s.model, partition, key), keys=s.signing_keys(),
                             allow_version_mismatch=s.allow_version_mismatch, package=package,
                             trusted=package in s.trusted_packages())
            served = (model, version)
        with self._lock:
            if self.version(partition) == version:  # else a newer version came meanwhile
                self.cache.put(partition, key, served, read=ahead)
        return served
