"""A bounded range of a topic, read for a backtest (``stream-learner evaluate``).

The range is given in offsets (``--from-offset``/``--to-offset``, one number for every
partition or ``P:N,P:N``) or in times (``--from-time``/``--to-time``, ISO-8601 or epoch
milliseconds), turned into offsets per partition with Kafka's offsets-for-times: the first
offset whose timestamp is at least the time. The start is inclusive, the end exclusive, as
Kafka's end offsets are; without an end, the end is where each partition ends when the read
starts, so a backtest stops even while producers write on.

The reader is assigned its partitions (``Consumer.assign``): it joins no consumer group, the
learner's least of all, and commits nothing.

Order: Kafka orders records within a partition only. The partitions are merged as the learner
merges them (consumers/ordering.py): the record with the smallest timestamp first among each
partition's next record, ties by topic and partition, each partition in its own order. So a
backtest over data already in Kafka sees the events in the order a learner would.

With ``--labels-topic``, the labels topic is read too, merged in the same order: from
``--from-time`` (from its start for an offset range) to its end when the read starts, so
that the labels that came after the last event of the range still join their events.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from consumers.clients.base import Clients, Consumer
from consumers.kafka_io import source_of
from stream_learner.config import Settings
from stream_learner.errors import ConfigError, StreamLearnerError
from stream_learner.events import Partition, Source

Item = tuple[bytes | None, Source]
# Without a record for this long from a partition that holds more, the read gives up.
STALL_S = 30.0


@dataclass(frozen=True)
class Bounds:
    """Where the range starts and ends: offsets (per partition; -1 in ``all`` for none) or
    times in epoch milliseconds (None for none)."""

    from_offsets: Mapping[int, int] | int | None = None
    to_offsets: Mapping[int, int] | int | None = None
    from_ms: int | None = None
    to_ms: int | None = None


def parse_time(text: str, flag: str) -> int:
    """Epoch milliseconds from ``text``: an integer (epoch ms) or ISO-8601 (UTC unless it says).

    >>> parse_time("1764086400000", "--from-time"), parse_time("2025-11-25T16:00:00Z", "--to-time")
    (1764086400000, 1764086400000)
    """
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: not an ISO-8601 time nor epoch milliseconds") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def parse_offsets(text: str, flag: str) -> Mapping[int, int] | int:
    """One offset for every partition (``100``), or ``P:N`` pairs (``0:100,1:250``).

    >>> parse_offsets("100", "--from-offset"), parse_offsets("0:100, 1:250", "--to-offset")
    (100, {0: 100, 1: 250})
    """
    try:
        if ":" not in text:
            return _offset(int(text), flag)
        pairs = (item.split(":", 1) for item in text.split(",") if item.strip())
        return {_offset(int(p), flag): _offset(int(o), flag) for p, o in pairs}
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: expected an offset, or PARTITION:OFFSET pairs") from None


def _offset(value: int, flag: str) -> int:
    if value < 0:
        raise ConfigError(f"{flag} {value}: must be at least 0")
    return value


def make_bounds(from_offset: str | None, to_offset: str | None, from_time: str | None,
                to_time: str | None) -> Bounds:
    """The bounds of the flags; ``ConfigError`` naming them for a mix of offsets and times or an
    end before its start."""
    if (from_offset or to_offset) and (from_time or to_time):
        raise ConfigError("--from-offset/--to-offset and --from-time/--to-time: give a range in offsets "
                          "or in times, not both")
    bounds = Bounds(None if from_offset is None else parse_offsets(from_offset, "--from-offset"),
                    None if to_offset is None else parse_offsets(to_offset, "--to-offset"),
                    None if from_time is None else parse_time(from_time, "--from-time"),
                    None if to_time is None else parse_time(to_time, "--to-time"))
    if bounds.from_ms is not None and bounds.to_ms is not None and bounds.to_ms < bounds.from_ms:
        raise ConfigError(f"--to-time {to_time}: before --from-time {from_time}")
    a, b = bounds.from_offsets, bounds.to_offsets
    if isinstance(a, int) and isinstance(b, int) and b < a:
        raise ConfigError(f"--to-offset {b}: before --from-offset {a}")
    return bounds


def _pick(given: Mapping[int, int] | int | None, partition: int, default: int) -> int:
    if given is None:
        return default
    if isinstance(given, int):
        return given
    return given.get(partition, default)


def plan(reader: Consumer, topic: str, bounds: Bounds, flag: str) -> dict[Partition, tuple[int, int]]:
    """(start, end) of each partition of ``topic``: within what it holds now."""
    starts, ends = reader.start_offsets(topic, flag), reader.end_offsets(topic, flag)
    if not ends:
        raise StreamLearnerError(f"{flag} {topic}: no such topic")
    named = {p for given in (bounds.from_offsets, bounds.to_offsets) if isinstance(given, Mapping)
             for p in given} - set(ends)
    if named:
        raise ConfigError(f"--from-offset/--to-offset: {topic} has no partition {min(named)}")
    from_t = reader.offsets_for_time(topic, bounds.from_ms, flag) if bounds.from_ms is not None else {}
    to_t = reader.offsets_for_time(topic, bounds.to_ms, flag) if bounds.to_ms is not None else {}
    out = {}
    for p, end in ends.items():
        start = max(starts.get(p, 0), from_t.get(p, _pick(bounds.from_offsets, p, 0)))
        stop = min(end, to_t.get(p, _pick(bounds.to_offsets, p, end)))
        out[(topic, p)] = (start, max(start, stop))
    return out


def labels_plan(reader: Consumer, settings: Settings, bounds: Bounds) -> dict[Partition, tuple[int, int]]:
    """The labels topic's range: from the range's start time (or the topic's start) to its end."""
    return plan(reader, settings.labels_topic, Bounds(from_ms=bounds.from_ms), "--labels-topic")


class _Partitions:
    """Each partition's records in its own order, until its end bound; merged by timestamp."""

    def __init__(self, ranges: Mapping[Partition, tuple[int, int]]) -> None:
        self.ends = {p: end for p, (start, end) in ranges.items() if end > start}
        self.buffers: dict[Partition, deque[Any]] = {p: deque() for p in self.ends}
        self.done: set[Partition] = set()

    def add(self, records: list[Any]) -> None:
        for record in records:
            where = (record.topic() or "", record.partition() or 0)
            if where in self.done or where not in self.ends:
                continue
            if (record.offset() or 0) >= self.ends[where]:
                self.done.add(where)
                continue
            self.buffers[where].append(record)
            if (record.offset() or 0) + 1 >= self.ends[where]:
                self.done.add(where)

    def ended(self, partitions: frozenset[Partition], at_end: set[Partition]) -> None:
        """Partitions read to their log's end, whose bound is that end: nothing more comes."""
        self.done.update(p for p in partitions if p in at_end)

    def waiting(self) -> list[Partition]:
        """Partitions with nothing buffered that hold more: the merge cannot go on without them."""
        return [p for p, buf in self.buffers.items() if not buf and p not in self.done]

    def drain(self) -> Iterator[Any]:
        """Records in timestamp order while every partition that holds more has one buffered."""
        if self.waiting():
            return
        heads = [(buf[0].timestamp()[1], p) for p, buf in self.buffers.items() if buf]
        heapq.heapify(heads)
        while heads:
            _, p = heapq.heappop(heads)
            buf = self.buffers[p]
            yield buf.popleft()
            if buf:
                heapq.heappush(heads, (buf[0].timestamp()[1], p))
            elif p not in self.done:
                return

    def finished(self) -> bool:
        return all(p in self.done and not self.buffers[p] for p in self.ends)


def read_range(clients: Clients, settings: Settings, bounds: Bounds) -> Iterator[Item]:
    """The range's records of ``--events-topic`` (and of ``--labels-topic`` when set), merged in
    event-time order; ``StreamLearnerError`` when a partition that holds more stops answering."""
    reader = clients.reader()
    try:
        ranges = plan(reader, settings.events_topic, bounds, "--events-topic")
        if settings.labels_topic:
            ranges.update(labels_plan(reader, settings, bounds))
        topic_ends = {(t, p) for t in {t for t, _ in ranges}
                      for p, end in reader.end_offsets(t, "--events-topic").items()
                      if ranges[(t, p)][1] == end}
        parts = _Partitions(ranges)
        reader.assign({p: ranges[p][0] for p in parts.ends})
        answered = time.monotonic()
        while not parts.finished():
            batch = reader.poll(settings.max_poll_records, 0.5)
            if batch.records:
                answered = time.monotonic()
            parts.add(batch.records)
            parts.ended(batch.ended, topic_ends)
            if parts.waiting() and time.monotonic() - answered > STALL_S:
                raise StreamLearnerError(f"--bootstrap-servers {settings.bootstrap_servers}: no records "
                                         f"from {sorted(parts.waiting())[0]} for {STALL_S:g} s")
            for record in parts.drain():
                yield record.value(), source_of(record)
    finally:
        reader.close()
