"""Under key scope, the partitions a learner owns, and their checkpoints.

A partition is taken (``take``) when the consumer group assigns it: the learner claims it in
the store (a new fencing token), loads its checkpoint and starts reading at its offset. Its
checkpoint (``save``) is, in this order: 0. plan (the partition's state and offset now, its
changed key models) -> 1. every send so far acknowledged -> 2. one fenced, atomic write of the
partition's record, its changed key models and the removal of keys idle past the ttl ->
3. the key models are clean in the cache -> 4. Kafka hears of the offset (for lag only).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from consumers.kafka_io import Publisher
from stream_learner.checkpoint import CheckpointMeta, partition_key, read_offsets, spec_package, verify_record
from stream_learner.config import Settings
from stream_learner.errors import FencedError, OutOfOrder, StoreUnavailable
from stream_learner.key_cache import KeyCache
from stream_learner.key_records import (
    key_slot,
    open_key,
    open_partition,
    partition_slot,
    seal_key,
    seal_partition,
)
from stream_learner.keyed import KeyedEngine, KeyModel, PartitionState, described, expiry_cutoff
from stream_learner.state.keyed_base import KeyedStore, PartitionSave

log = logging.getLogger("stream_learner.learner")

RETRY_MIN, RETRY_MAX = 0.5, 30.0


@dataclass
class Owned:
    """A partition this learner owns: its state as of its next offset."""

    partition: int
    token: int
    version: int
    state: PartitionState
    offset: int | None  # the next offset to read (None: --start-from)
    dead_letters: dict[str, int] = field(default_factory=dict)
    since: int = 0  # events since its checkpoint
    saved_at: float = field(default_factory=time.monotonic)
    retry_at: float = 0.0
    failures: int = 0
    last_bytes: int = 0  # of its last checkpoint, written at last_at (Unix time; 0: none yet)
    last_at: float = 0.0


class Partitions:
    """The partitions owned, their checkpoints and their key models' loading."""

    def __init__(self, settings: Settings, store: KeyedStore, engine: KeyedEngine,
                 cache: KeyCache[KeyModel]) -> None:
        self.settings = settings
        self.store = store
        self.engine = engine
        self.cache = cache
        self.owned: dict[int, Owned] = {}
        self.uncommitted: dict[int, int] = {}  # partition -> checkpointed offset Kafka has not heard of
        self.absent: set[tuple[int, str]] = set()  # keys the store had no model of, this batch

    def take(self, partition: int) -> Owned:
        """Claim the partition and go on from its checkpoint (a fresh state before its first)."""
        s = self.settings
        token = self.store.claim(s.model, partition)
        record = self.store.partition(s.model, partition)
        if record is None:
            owned = Owned(partition, token, 0, self.engine.fresh_partition(), None)
        else:
            meta, state = open_partition(record, s.signing_keys(), trusted=s.trusted_packages(),
                                         allow_version_mismatch=s.allow_version_mismatch)
            offset = read_offsets(meta.offsets).get((s.events_topic, partition))
            owned = Owned(partition, token, meta.version, state, offset, dict(meta.dead_letters))
        self.owned[partition] = owned
        log.info("partition %d: token %d, from v%d at offset %s", partition, token, owned.version,
                 owned.offset)
        return owned

    def release(self, partition: int) -> None:
        self.owned.pop(partition, None)
        self.cache.drop(partition)

    def load(self, partition: int, keys: list[str]) -> None:
        """Bring the keys' models that are not in the cache into it, in one store read (a
        batch's: the cache may let some go again before their events come). The keys the store
        has no model of are noted, so that their events need no read of their own."""
        missing = [k for k in dict.fromkeys(keys) if not self.cache.has(partition, k)]
        if missing:
            for key, blob in zip(missing, self.store.key_models(self.settings.model, partition, missing),
                                 strict=True):
                if blob is None:
                    self.absent.add((partition, key))
                else:
                    self.cache.put(partition, key, self._open(partition, key, blob), read=True)

    def model(self, partition: int, key: str) -> KeyModel | None:
        """The key's model: from the cache, else from the store; None when it has none."""
        found = self.cache.get(partition, key)
        if found is None and (partition, key) not in self.absent:
            blob = self.store.key_models(self.settings.model, partition, [key])[0]
            if blob is not None:
                found = self._open(partition, key, blob)
        return found

    def _open(self, partition: int, key: str, blob: bytes) -> KeyModel:
        s = self.settings
        package = spec_package(s.model_spec)
        return open_key(blob, slot=key_slot(s.model, partition, key), keys=s.signing_keys(),
                        allow_version_mismatch=s.allow_version_mismatch, package=package,
                        trusted=package in s.trusted_packages())

    def due(self, owned: Owned, now: float) -> bool:
        s = self.settings
        return (owned.since > 0 and now >= owned.retry_at
                and (owned.since >= s.checkpoint_every or now - owned.saved_at >= s.checkpoint_interval))

    def save(self, owned: Owned, publisher: Publisher, reason: str) -> int | None:
        """Checkpoint the partition: the bytes written; None when the store is out (retried
        later) or the partition is another learner's now (it is released)."""
        s, p = self.settings, owned.partition
        dirty = sorted(self.cache.dirty.get(p, ()))  # 0. plan
        publisher.flush()  # 1. every send before it acknowledged
        models = self.cache.models(p, dirty)
        secret = s.hmac_key.encode()
        blobs = {k: seal_key(m, slot=key_slot(s.model, p, k), key_id=s.hmac_key_id, secret=secret)
                 for k, m in models.items()}
        meta = self._header(owned)
        record = seal_partition(owned.state, meta, key_id=s.hmac_key_id, secret=secret)
        save = PartitionSave(p, owned.version + 1, owned.token, record, blobs,
                             {k: m.last_ts for k, m in models.items()},
                             expiry_cutoff(owned.state, int(s.key_ttl * 1000)))
        try:  # 2. written, fenced
            removed = self.store.save_partition(s.model, save)
        except StoreUnavailable as exc:
            owned.failures += 1
            delay = min(RETRY_MAX, RETRY_MIN * 2 ** min(owned.failures - 1, 10))
            owned.retry_at = time.monotonic() + delay
            log.error("partition %d: checkpoint v%d failed, retrying in %.1f s: %s", p, save.version,
                      delay, exc)
            return None
        except OutOfOrder as exc:
            return self._resolve(owned, save, exc, publisher, reason)
        except FencedError as exc:
            self._fenced(p, exc)
            return None
        owned.state.keys_expired += removed
        self.engine.keys_expired += removed
        owned.version, owned.since, owned.saved_at, owned.failures = save.version, 0, time.monotonic(), 0
        owned.last_bytes = len(record.payload) + sum(len(b) for b in blobs.values())
        owned.last_at = time.time()
        self.cache.saved(p, dirty)  # 3. the loop hears of it
        if owned.offset is not None:
            self.uncommitted[p] = owned.offset
        log.info("partition %d: checkpoint v%d (%s): %d keys written, %d idle removed, %s", p, save.version,
                 reason, len(blobs), removed, described(owned.state))
        return owned.last_bytes

    def _resolve(self, owned: Owned, save: PartitionSave, exc: OutOfOrder, publisher: Publisher,
                 reason: str) -> int | None:
        """A save whose answer was lost may have landed all the same: then the partition's latest
        is that save, with this learner's token, and the next one follows it at once."""
        s = self.settings
        try:
            record = self.store.partition(s.model, owned.partition)
        except StoreUnavailable:
            return None
        meta = None if record is None else verify_record(record, s.signing_keys(), s.allow_version_mismatch)
        if meta is None or meta.token != owned.token or meta.version < save.version:
            self._fenced(owned.partition, exc)
            return None
        log.warning("partition %d: checkpoint v%d was saved although its answer was lost; the next one "
                    "follows it", owned.partition, meta.version)
        owned.version = meta.version
        return self.save(owned, publisher, reason)

    def _fenced(self, partition: int, exc: Exception) -> None:
        log.warning("partition %d: another learner owns it now (or models reset ran); writing nothing "
                    "more: %s", partition, exc)
        self.release(partition)

    def _header(self, owned: Owned) -> CheckpointMeta:
        s, state = self.settings, owned.state
        where = partition_key((s.events_topic, owned.partition))
        offsets = {} if owned.offset is None else {where: owned.offset}
        return CheckpointMeta(partition_slot(s.model, owned.partition), owned.version + 1, offsets,
                              learned=state.learned, learned_digest=state.digest, events=state.events,
                              dead_letters=dict(owned.dead_letters), token=owned.token,
                              created_at=time.time(), keys=described(state))
