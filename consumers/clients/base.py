"""The Kafka clients as the loops use them: one small interface, several implementations.

A consumer assigns, seeks, polls and commits, and calls the loop back when the group gives
it partitions or takes them away; a producer sends, with a delivery report per send. Records
are what the client hands out: anything with librdkafka's accessors (``topic()``,
``offset()``, ...), so that the fast path copies nothing per record. What is particular to a
client (librdkafka's end-of-partition markers, its rebalance callbacks on the poll thread,
its error objects) stays inside its implementation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol

from stream_learner.config import Settings
from stream_learner.events import Partition

Headers = list[tuple[str, str | bytes | None]]

# What a broker accepts in one record batch unless told otherwise (message.max.bytes).
BROKER_DEFAULT_RECORD_BYTES = 1_048_588
# A producer answers every send within this: acknowledged, or failed.
DELIVERY_TIMEOUT_MS = 120_000
# Room for the dead-letter copy of an oversized event; the broker still enforces its own limit.
MAX_REQUEST_BYTES = 64 * 1024 * 1024
BATCH_FRAMING_BYTES = 1024


def batch_bytes(default: int, max_batch: int) -> int:
    """A producer's batch size: its client's ``default``, below a topic's record limit
    ``max_batch`` (a larger record goes alone)."""
    return max(1024, min(default, max_batch - BATCH_FRAMING_BYTES))


def security_settings(settings: Settings) -> dict[str, str]:
    """The Kafka auth/TLS settings that apply, by setting name, for a client to rename: the
    protocol always, the SASL settings with a mechanism, the CA file when given."""
    wanted = ["security_protocol"]
    if settings.sasl_mechanism:
        wanted += ["sasl_mechanism", "sasl_username", "sasl_password"]
    if settings.ssl_cafile:
        wanted.append("ssl_cafile")
    return {name: getattr(settings, name) for name in wanted}


class Record(Protocol):
    """One record as a consumer hands it out."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def timestamp(self) -> tuple[int, int]: ...
    def headers(self) -> Any: ...


class Batch(NamedTuple):
    """What a poll returns: records, in each partition's order, and the partitions found read
    to their end after their last record here (a learner's consumer says so; others do not)."""

    records: list[Any]  # Record
    ended: frozenset[Partition] = frozenset()


class Delivery(NamedTuple):
    """The broker's answer to one send: where the record went, or why it did not."""

    partition: Partition
    offset: int
    error: str | None = None


# Called with the partitions assigned: where each starts (a missing one starts at
# --start-from, whatever was committed), or None for the committed positions.
OnAssign = Callable[[list[Partition]], Mapping[Partition, int] | None]
OnRevoke = Callable[[list[Partition]], None]


class Consumer(Protocol):
    def subscribe(self, topics: list[str], *, on_assign: OnAssign, on_revoke: OnRevoke) -> None:
        """Join the group for ``topics``; the callbacks run inside ``poll``, on its thread."""

    def assign(self, starts: Mapping[Partition, int]) -> None:
        """Read these partitions from these offsets, outside any group."""

    def unassign(self) -> None: ...

    def assignment(self) -> list[Partition]: ...

    def seek(self, partition: Partition, offset: int) -> None: ...

    def poll(self, max_records: int, timeout: float, busy: float = 0.0) -> Batch:
        """What has arrived, up to ``max_records``, waiting up to ``timeout`` seconds for the
        first; for the first ``busy`` seconds of the wait, asking again instead of sleeping."""

    def commit(self, offsets: Mapping[Partition, int], *, wait: bool) -> None:
        """Commit these next offsets; a failure is logged, since the next commit covers it.
        ``wait``: until the group coordinator answers."""

    def end_offsets(self, topic: str, flag: str) -> dict[int, int]:
        """Partition -> the end offset of ``topic`` (none while it does not exist); ``flag``
        names the setting in errors."""

    def start_offsets(self, topic: str, flag: str) -> dict[int, int]:
        """Partition -> the first offset ``topic`` still holds (its log start)."""

    def offsets_for_time(self, topic: str, timestamp_ms: int, flag: str) -> dict[int, int]:
        """Partition -> the first offset of ``topic`` whose timestamp is at least
        ``timestamp_ms`` (Kafka's offsets-for-times), or the partition's end offset when none is."""

    def lags(self) -> dict[Partition, int | None]:
        """Records not read yet in each assigned partition, from what the last fetches said (no
        request to the broker); None while a partition's end is not known yet."""

    def close(self) -> None: ...


class Producer(Protocol):
    # Made ``failures_only``: its sends take no ``on_delivery``, and only those that fail are
    # reported, here (librdkafka then calls no Python code for a send that succeeds).
    failures_only: bool
    failures: list[str]

    def send(self, topic: str, value: bytes | None, key: bytes | None = None, *,
             on_delivery: Callable[[Delivery], None] | None = None, headers: Headers | None = None,
             timestamp_ms: int = 0) -> None:
        """Queue one record (timestamp 0: now); while the queue is full, wait for room.
        ``on_delivery`` runs in a later ``poll`` or ``flush``, on the caller's thread."""

    def poll(self, timeout: float) -> None:
        """Serve delivery reports, waiting up to ``timeout`` seconds for one."""

    def flush(self, timeout: float) -> int:
        """Send what is queued, waiting up to ``timeout`` seconds; what is still unanswered."""


class Clients(Protocol):
    """Makes a loop's clients. Construction does no network I/O; ``require_broker`` does."""

    def consumer(self, mode: str) -> Consumer:
        """A consumer in the service's group for ``mode`` (learn or serve)."""

    def reader(self) -> Consumer:
        """A consumer of no group, that reads what it is assigned to its end."""

    def producer(self, client_id: str, max_batch: int = BROKER_DEFAULT_RECORD_BYTES, *,
                 failures_only: bool = False) -> Producer:
        """A producer whose batches stay below ``max_batch`` bytes; ``failures_only``: one that
        reports failed sends alone (``Producer.failures``)."""

    def record_limit(self, topic: str) -> int:
        """The largest record ``topic`` accepts."""

    def require_broker(self) -> None:
        """``StreamLearnerError`` naming ``--bootstrap-servers`` unless a broker answers within
        ``--connect-timeout``."""
