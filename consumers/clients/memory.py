"""The in-memory twin of the Kafka clients, for unit tests: the same interface, no broker.

One ``MemoryBroker`` holds topics as lists of records; its consumers form a group of one (a
subscriber is assigned every partition of its topics at its first poll) and its producers
append at once and answer on their next ``poll`` or ``flush``, as librdkafka's do.

>>> broker = MemoryBroker()
>>> broker.create("events", partitions=2)
>>> producer = MemoryProducer(broker)
>>> answers = []
>>> producer.send("events", b"a", b"k", on_delivery=answers.append)
>>> producer.flush(1.0), answers
(0, [Delivery(partition=('events', 1), offset=0, error=None)])
>>> consumer = MemoryConsumer(broker, ends=True)
>>> consumer.subscribe(["events"], on_assign=lambda ps: None, on_revoke=lambda ps: None)
>>> batch = consumer.poll(10, 0.0)
>>> [r.value() for r in batch.records], sorted(batch.ended)
([b'a'], [('events', 0), ('events', 1)])
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from consumers.clients.base import (
    BROKER_DEFAULT_RECORD_BYTES,
    Batch,
    Delivery,
    Headers,
    OnAssign,
    OnRevoke,
)
from stream_learner.errors import StreamLearnerError
from stream_learner.events import Partition


@dataclass(frozen=True, slots=True)
class MemoryRecord:
    """A record, with librdkafka's accessors."""

    where: Partition
    offset_: int
    key_: bytes | None
    value_: bytes | None
    timestamp_ms: int
    headers_: Headers | None

    def topic(self) -> str:
        return self.where[0]

    def partition(self) -> int:
        return self.where[1]

    def offset(self) -> int:
        return self.offset_

    def key(self) -> bytes | None:
        return self.key_

    def value(self) -> bytes | None:
        return self.value_

    def timestamp(self) -> tuple[int, int]:
        return 1, self.timestamp_ms  # CreateTime

    def headers(self) -> Headers | None:
        return self.headers_


class MemoryBroker:
    def __init__(self) -> None:
        self.topics: dict[str, list[list[MemoryRecord]]] = {}
        self.committed: dict[Partition, int] = {}
        self.changed = threading.Condition()

    def create(self, topic: str, partitions: int = 1) -> None:
        with self.changed:
            self.topics.setdefault(topic, [[] for _ in range(partitions)])

    def append(self, topic: str, value: bytes | None, key: bytes | None = None, *,
               headers: Headers | None = None, timestamp_ms: int = 0) -> MemoryRecord:
        """Append to the key's partition (the first when there is no key); a topic written to
        before it exists is created with one partition."""
        with self.changed:
            partitions = self.topics.setdefault(topic, [[]])
            p = zlib.crc32(key) % len(partitions) if key is not None else 0
            log = partitions[p]
            record = MemoryRecord((topic, p), len(log), key, value,
                                  timestamp_ms or int(time.time() * 1000), headers)
            log.append(record)
            self.changed.notify_all()
            return record

    def end(self, partition: Partition) -> int:
        return len(self.topics[partition[0]][partition[1]])

    def read(self, partition: Partition, offset: int, count: int) -> list[MemoryRecord]:
        return self.topics[partition[0]][partition[1]][offset:offset + count]


class MemoryConsumer:
    """A consumer of ``broker``; ``ends``: say when a partition is read to its end."""

    def __init__(self, broker: MemoryBroker, start_from: str = "earliest", *, ends: bool = False) -> None:
        self.broker = broker
        self.start_from = start_from
        self.ends = ends
        self.positions: dict[Partition, int] = {}
        self.callbacks: tuple[OnAssign, OnRevoke] | None = None
        self.topics: list[str] = []
        self.joined = False

    def subscribe(self, topics: list[str], *, on_assign: OnAssign, on_revoke: OnRevoke) -> None:
        self.topics, self.callbacks, self.joined = list(topics), (on_assign, on_revoke), False

    def _join(self) -> None:
        assert self.callbacks is not None
        with self.broker.changed:
            for topic in self.topics:
                self.broker.topics.setdefault(topic, [[]])
            partitions = [(t, p) for t in self.topics for p in range(len(self.broker.topics[t]))]
        starts = self.callbacks[0](partitions)
        for p in partitions:
            start = self.broker.committed.get(p) if starts is None else starts.get(p)
            if start is None:
                start = 0 if self.start_from == "earliest" else self.broker.end(p)
            self.positions[p] = start
        self.joined = True

    def assign(self, starts: Mapping[Partition, int]) -> None:
        self.positions = dict(starts)

    def unassign(self) -> None:
        self.positions = {}

    def assignment(self) -> list[Partition]:
        return list(self.positions)

    def seek(self, partition: Partition, offset: int) -> None:
        if partition not in self.positions:
            raise StreamLearnerError(f"seek: {partition} is not assigned")
        self.positions[partition] = offset

    def poll(self, max_records: int, timeout: float, busy: float = 0.0) -> Batch:
        if self.callbacks is not None and not self.joined:
            self._join()
        deadline = time.monotonic() + timeout
        with self.broker.changed:
            while True:
                records: list[Any] = []
                for p, at in self.positions.items():
                    taken = self.broker.read(p, at, max_records - len(records))
                    records += taken
                    self.positions[p] = at + len(taken)
                left = deadline - time.monotonic()
                if records or left <= 0:
                    break
                self.broker.changed.wait(left)
        if not self.ends:
            return Batch(records)
        ended = frozenset(p for p, at in self.positions.items() if at >= self.broker.end(p))
        return Batch(records, ended)

    def commit(self, offsets: Mapping[Partition, int], *, wait: bool) -> None:
        self.broker.committed.update(offsets)

    def end_offsets(self, topic: str, flag: str) -> dict[int, int]:
        """None while the topic does not exist, as with librdkafka's."""
        return {p: self.broker.end((topic, p)) for p in range(len(self.broker.topics.get(topic, [])))}

    def start_offsets(self, topic: str, flag: str) -> dict[int, int]:
        return dict.fromkeys(range(len(self.broker.topics.get(topic, []))), 0)

    def offsets_for_time(self, topic: str, timestamp_ms: int, flag: str) -> dict[int, int]:
        out = {}
        for p, log in enumerate(self.broker.topics.get(topic, [])):
            out[p] = next((r.offset_ for r in log if r.timestamp_ms >= timestamp_ms), len(log))
        return out

    def lags(self) -> dict[Partition, int | None]:
        return {p: max(0, self.broker.end(p) - at) for p, at in self.positions.items()}

    def close(self) -> None:
        """Leave the group: its partitions are revoked first, as librdkafka's close does."""
        if self.callbacks is not None and self.joined:
            self.callbacks[1](list(self.positions))
        self.positions, self.joined = {}, False


class MemoryProducer:
    """Appends at once; answers each send on the next ``poll`` or ``flush`` while ``acking``."""

    def __init__(self, broker: MemoryBroker, failures_only: bool = False) -> None:
        self.broker = broker
        self.acking = True
        self.failures_only = failures_only
        self.failures: list[str] = []  # never: the memory broker takes every record
        self.unanswered: list[tuple[Callable[[Delivery], None] | None, MemoryRecord]] = []

    def send(self, topic: str, value: bytes | None, key: bytes | None = None, *,
             on_delivery: Callable[[Delivery], None] | None = None, headers: Headers | None = None,
             timestamp_ms: int = 0) -> None:
        record = self.broker.append(topic, value, key, headers=headers, timestamp_ms=timestamp_ms)
        self.unanswered.append((on_delivery, record))

    def poll(self, timeout: float) -> None:
        if not self.acking:
            return
        answered, self.unanswered = self.unanswered, []
        for on_delivery, record in answered:
            if on_delivery is not None:
                on_delivery(Delivery(record.where, record.offset_))

    def flush(self, timeout: float) -> int:
        self.poll(timeout)
        return len(self.unanswered)


class MemoryClients:
    """The clients of one ``MemoryBroker``."""

    def __init__(self, broker: MemoryBroker, start_from: str = "earliest") -> None:
        self.broker = broker
        self.start_from = start_from

    def consumer(self, mode: str) -> MemoryConsumer:
        return MemoryConsumer(self.broker, self.start_from, ends=mode == "learn")

    def reader(self) -> MemoryConsumer:
        return MemoryConsumer(self.broker, ends=True)

    def producer(self, client_id: str, max_batch: int = BROKER_DEFAULT_RECORD_BYTES, *,
                 failures_only: bool = False) -> MemoryProducer:
        return MemoryProducer(self.broker, failures_only)

    def record_limit(self, topic: str) -> int:
        return BROKER_DEFAULT_RECORD_BYTES

    def require_broker(self) -> None:
        return None
