"""Event-time order across partitions (and across the events and labels topics).

Kafka orders records within a partition only; how a poll interleaves partitions depends on
timing. The learner instead takes, among the partitions it owns, the buffered record with the
smallest timestamp, and waits for a partition that has nothing buffered but holds more (or has
not answered a fetch yet). A fetch answers within ~100 ms, so the wait is short; ``max_wait``
(30 s) only guards against a partition that stays unreadable. So a replay of data already in
Kafka is processed in the same order every time, and a label is learned after the events
stamped before it.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from kafka import KafkaConsumer, TopicPartition


class EventTimeMerge:
    def __init__(self, consumer: KafkaConsumer, max_wait: float = 30.0, max_buffered: int = 5000) -> None:
        self.consumer = consumer
        self.max_wait = max_wait
        self.max_buffered = max_buffered
        self.buffers: dict[TopicPartition, deque[Any]] = {}
        self.paused: set[TopicPartition] = set()
        self.waiting_since: float | None = None

    def add(self, batch: dict[TopicPartition, list[Any]]) -> None:
        for tp, records in batch.items():
            if records:
                self.buffers.setdefault(tp, deque()).extend(records)
                if len(self.buffers[tp]) >= self.max_buffered and tp not in self.paused:
                    self.consumer.pause(tp)  # the others must catch up first
                    self.paused.add(tp)

    def clear(self, partitions: Any = None) -> None:
        """Forget what is buffered (before a seek), for some partitions or all."""
        for tp in list(self.buffers if partitions is None else partitions):
            self.buffers.pop(tp, None)
            if tp in self.paused:
                self.paused.discard(tp)
                if tp in self.consumer.assignment():
                    self.consumer.resume(tp)
        self.waiting_since = None

    def _lagging(self, tp: TopicPartition) -> bool:
        """Nothing buffered, but the broker holds more than the consumer has returned."""
        highwater = self.consumer.highwater(tp)
        return highwater is None or self.consumer.position(tp) < highwater  # None: not fetched yet

    def drain(self) -> Any:
        """Yield records in timestamp order while that order is certain (or waited for enough)."""
        while True:
            ready = [tp for tp, buf in self.buffers.items() if buf]
            if not ready:
                return
            if len(ready) == 1 and len(self.consumer.assignment()) == 1:
                tp = ready[0]  # one partition: its own order
            else:
                empty = [tp for tp in self.consumer.assignment() if not self.buffers.get(tp)]
                if any(self._lagging(tp) for tp in empty):
                    now = time.monotonic()
                    self.waiting_since = self.waiting_since or now
                    if now - self.waiting_since < self.max_wait:
                        return
                self.waiting_since = None
                tp = min(ready, key=lambda t: (self.buffers[t][0].timestamp, t.topic, t.partition))
            record = self.buffers[tp].popleft()
            if tp in self.paused and len(self.buffers[tp]) < self.max_buffered // 2:
                self.consumer.resume(tp)
                self.paused.discard(tp)
            yield record
