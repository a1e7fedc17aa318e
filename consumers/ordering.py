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
from typing import Any

from kafka import KafkaConsumer, TopicPartition


class EventTimeMerge:
    def __init__(self, consumer: KafkaConsumer, max_wait: float = 2.0, max_buffered: int = 20_000) -> None:
        self.consumer = consumer
        self.max_wait = max_wait
        self.max_buffered = max_buffered
        self.buffers: dict[TopicPartition, deque[Any]] = {}
        self.buffered = 0
        self.waiting_since: float | None = None

    def add(self, batch: dict[TopicPartition, list[Any]]) -> None:
        for tp, records in batch.items():
            if records:
                self.buffers.setdefault(tp, deque()).extend(records)
                self.buffered += len(records)

    @property
    def full(self) -> bool:
        return self.buffered >= self.max_buffered

    def clear(self) -> None:
        """Forget what is buffered (before a seek)."""
        self.buffers.clear()
        self.buffered = 0
        self.waiting_since = None

    def _lagging(self, tp: TopicPartition) -> bool:
        """Nothing buffered, but the broker holds more than the consumer has returned."""
        highwater = self.consumer.highwater(tp)
        return highwater is None or self.consumer.position(tp) < highwater  # None: not fetched yet

    def drain(self) -> Any:
        """Yield records in timestamp order while that order is certain (or waited for enough)."""
        assigned = self.consumer.assignment()  # changes only inside poll(), not while draining
        if len(assigned) <= 1:  # one partition: its own order, no choice to make per record
            for buf in self.buffers.values():
                while buf:
                    self.buffered -= 1
                    yield buf.popleft()
            return
        # Positions move only inside poll(): whether an empty partition lags is asked once per
        # drain, and again only of a partition this drain empties.
        lagging = any(self._lagging(tp) for tp in assigned if not self.buffers.get(tp))
        while True:
            ready = [tp for tp, buf in self.buffers.items() if buf]
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
            tp = min(ready, key=lambda t: (self.buffers[t][0].timestamp, t.topic, t.partition))
            buf = self.buffers[tp]
            self.buffered -= 1
            record = buf.popleft()
            if not buf:
                lagging = lagging or self._lagging(tp)
            yield record
