"""Event-time order across partitions (and across the events and labels topics).

Kafka orders records within a partition only; how a poll interleaves partitions depends on
timing. The learner instead takes, among the partitions it owns, the buffered record with the
smallest timestamp, and waits for a partition that has nothing buffered but holds more (or has
not answered a fetch yet). A fetch answers within ~100 ms, so the wait is short; ``max_wait``
(2 s) bounds it for a partition that stays unreadable, and then order gives way to progress.
So a replay of data already in Kafka is processed in the same order every time, and a label
is learned after the events stamped before it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from consumers.clients.base import Batch
from stream_learner.events import Partition


class EventTimeMerge:
    """Records in, in event-time order out.

    A partition counts as read to its end from a batch that says so (``Batch.ended``) until its
    next record: the consumer says so whenever a fetch finds nothing more, after the records
    that fetch returned. ``assign`` is told the partitions the consumer owns."""

    def __init__(self, max_wait: float = 2.0, max_buffered: int = 20_000) -> None:
        self.max_wait = max_wait
        self.max_buffered = max_buffered
        self.assigned: set[Partition] = set()
        self.buffers: dict[Partition, deque[Any]] = {}
        self.at_end: set[Partition] = set()
        self.buffered = 0
        self.waiting_since: float | None = None

    def assign(self, partitions: Iterable[Partition]) -> None:
        """The consumer owns these now (and each starts afresh at a position of its own)."""
        self.assigned = set(partitions)
        self.at_end.clear()
        self.clear()

    def add(self, batch: Batch) -> None:
        at_end = self.at_end
        for m in batch.records:
            where = (m.topic(), m.partition())
            buf = self.buffers.get(where)
            if buf is None:
                buf = self.buffers[where] = deque()
            buf.append(m)
            if at_end:
                at_end.discard(where)
        self.buffered += len(batch.records)
        if batch.ended:
            at_end.update(batch.ended)

    @property
    def full(self) -> bool:
        return self.buffered >= self.max_buffered

    def heads(self) -> list[Any]:
        """The first record buffered of each partition."""
        return [buf[0] for buf in self.buffers.values() if buf]

    def push_front(self, messages: list[Any]) -> None:
        """Put records back before what is buffered (a rewind replays them), in their order."""
        for m in reversed(messages):
            where = (m.topic(), m.partition())
            buf = self.buffers.get(where)
            if buf is None:
                buf = self.buffers[where] = deque()
            buf.appendleft(m)
            self.buffered += 1

    def clear(self) -> None:
        """Forget what is buffered (before a seek)."""
        self.buffers.clear()
        self.buffered = 0
        self.waiting_since = None

    def drain(self) -> Iterator[Any]:
        """Yield records in timestamp order while that order is certain (or waited for enough)."""
        if len(self.assigned) <= 1:  # one partition: its own order, no choice to make per record
            for buf in self.buffers.values():
                while buf:
                    self.buffered -= 1
                    yield buf.popleft()
            return
        # A partition with nothing buffered that is not read to its end may hold an earlier
        # record: asked once per drain, and again only of a partition this drain empties.
        lagging = any(p not in self.at_end for p in self.assigned if not self.buffers.get(p))
        while True:
            ready = [p for p, buf in self.buffers.items() if buf]
            if not ready:
                return
            # Past max_wait, or past max_buffered (memory wins over order), go on without the
            # laggard until it catches up.
            if lagging and not self.full:
                now = time.monotonic()
                self.waiting_since = self.waiting_since or now
                if now - self.waiting_since < self.max_wait:
                    return
            else:
                self.waiting_since = None
            p = min(ready, key=lambda q: (self.buffers[q][0].timestamp()[1], q))
            buf = self.buffers[p]
            self.buffered -= 1
            record = buf.popleft()
            if not buf:
                lagging = lagging or p not in self.at_end
            yield record
