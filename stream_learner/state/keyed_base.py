"""The key scope's store: per partition, a fenced checkpoint and the models of its keys.

Two implementations: ``state.keyed_redis.RedisKeyedStore`` and ``state.keyed_memory.
MemoryKeyedStore`` (its in-memory twin). Redis layout for partition ``n`` of model ``m`` under
prefix ``p`` (the ``{p:m#n}`` hash tag puts one partition's keys in one cluster slot, so that
a partition's save, one script over those keys, runs on Redis Cluster as on one server)::

    {p:m#n}:owner    the fencing token of the partition's newest owner (only ever grows)
    {p:m#n}:meta     hash: v (version), h, p, s (the partition checkpoint's header, payload,
                     signature)                                  what predictors poll (v)
    {p:m#n}:models   hash: key -> the key's signed model record
    {p:m#n}:seen     sorted set: key -> the record time (ms) of its latest event
    {p:m#n}:changed  sorted set: key -> the version that last changed it (the last
                     CHANGES_KEPT versions): what a predictor reloads

(A global model's keys are ``{p:m}:...``; none of their suffixes is one of these, so that a
global model named ``m#0`` shares no key with partition 0 of key-scope model ``m``.)

A learner that is assigned a partition claims it (the fence grows by one, the new token is
its own); each save checks, inside Redis, that its token is still the fence and that its
version follows the partition's latest, and writes the partition's checkpoint, its changed key
models and the removal of keys idle past the ttl in one step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple, Protocol

from stream_learner.checkpoint import Record

CHANGES_KEPT = 1000  # versions whose changed keys a predictor can ask for
SWEEP_LIMIT = 1000  # idle keys removed by one save at most


class PartitionSave(NamedTuple):
    """One partition's checkpoint: the record, and the key models it changed."""

    partition: int
    version: int
    token: int
    record: Record
    models: Mapping[str, bytes]  # key -> signed model record
    seen: Mapping[str, int]  # key -> record time (ms) of its latest event
    expire_before: int = 0  # remove the keys last seen before this record time (0: none)


class KeyedStore(Protocol):
    shared: bool

    def claim(self, model: str, partition: int) -> int:
        """Become the partition's writer: its new fencing token."""

    def partition(self, model: str, partition: int) -> Record | None:
        """The partition's latest checkpoint record, None before its first."""

    def save_partition(self, model: str, save: PartitionSave) -> int:
        """Write it atomically if ``save.token`` is the fence (else ``FencedError``) and its
        version follows the latest (else ``OutOfOrder``): the number of idle keys removed."""

    def key_models(self, model: str, partition: int, keys: Sequence[str]) -> list[bytes | None]:
        """The keys' model records, None for a key without one."""

    def versions(self, model: str, partitions: Sequence[int]) -> dict[int, int]:
        """Each partition's latest version (0 before its first checkpoint)."""

    def changed(self, model: str, partition: int, after: int, upto: int) -> list[str] | None:
        """The keys changed by versions ``after`` (excluded) to ``upto``; None when that reaches
        back past the versions kept (then every key may have changed)."""

    def key_count(self, model: str, partition: int) -> int:
        """Keys with a model in the store."""

    def key_names(self, model: str, partition: int) -> list[str]:
        """The keys with a model in the store, sorted."""

    def models(self) -> list[str]:
        """The key-scope models with a partition in the store."""

    def partitions(self, model: str) -> list[int]:
        """The model's partitions that a learner ever claimed."""

    def reset_partition(self, model: str, partition: int) -> int:
        """Delete the partition's checkpoint and key models (the next owner starts it afresh)
        and grow its fence, so that an owner still running writes nothing over the reset: the
        number of key models deleted."""


def reaches_back(after: int, upto: int) -> bool:
    """Whether the changes from ``after`` to ``upto`` reach back past those kept."""
    return after < upto - CHANGES_KEPT
