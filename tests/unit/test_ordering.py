"""The event-time merge against an in-memory twin of the consumer's positions."""

from __future__ import annotations

import time
from typing import NamedTuple

from kafka import TopicPartition

from consumers.ordering import EventTimeMerge

A, B = TopicPartition("events", 0), TopicPartition("events", 1)


class Rec(NamedTuple):
    topic: str
    partition: int
    offset: int
    timestamp: int


class ConsumerTwin:
    """What the merge asks of a KafkaConsumer: the assignment, positions and high watermarks."""

    def __init__(self, position: dict[TopicPartition, int], highwater: dict[TopicPartition, int]) -> None:
        self.positions, self.highwaters = position, highwater

    def assignment(self) -> set[TopicPartition]:
        return set(self.positions)

    def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.highwaters.get(tp)


def records(tp: TopicPartition, stamps: list[int]) -> list[Rec]:
    return [Rec(tp.topic, tp.partition, i, ts) for i, ts in enumerate(stamps)]


def stamps(merge: EventTimeMerge) -> list[tuple[int, int]]:
    return [(r.partition, r.timestamp) for r in merge.drain()]


def test_records_come_in_timestamp_order_across_partitions_while_the_order_is_certain() -> None:
    # Both partitions returned everything the broker holds.
    merge = EventTimeMerge(ConsumerTwin({A: 3, B: 2}, {A: 3, B: 2}))
    merge.add({A: records(A, [1, 4, 6]), B: records(B, [2, 5])})
    assert stamps(merge) == [(0, 1), (1, 2), (0, 4), (1, 5), (0, 6)]
    assert merge.buffered == 0


def test_it_waits_for_a_partition_the_broker_holds_more_of() -> None:
    # B's buffer runs dry while the broker holds more of B: A's later records must wait.
    merge = EventTimeMerge(ConsumerTwin({A: 3, B: 1}, {A: 3, B: 5}), max_wait=60.0)
    merge.add({A: records(A, [1, 4, 6]), B: records(B, [2])})
    assert stamps(merge) == [(0, 1), (1, 2)]
    assert merge.buffered == 2


def test_past_max_wait_everything_buffered_goes_on_without_the_laggard() -> None:
    merge = EventTimeMerge(ConsumerTwin({A: 3, B: 0}, {A: 3}), max_wait=2.0)
    merge.add({A: records(A, [1, 4, 6])})
    assert stamps(merge) == []  # B has not answered a fetch yet: wait
    assert merge.waiting_since is not None
    merge.waiting_since = time.monotonic() - 2.5  # as if max_wait had passed
    assert stamps(merge) == [(0, 1), (0, 4), (0, 6)]
    merge.add({A: [Rec("events", 0, 3, 7)]})
    assert stamps(merge) == [(0, 7)]  # still lagging: progress goes on, no new wait


def test_one_partition_drains_in_its_own_order() -> None:
    merge = EventTimeMerge(ConsumerTwin({A: 2}, {A: 9}))
    merge.add({A: records(A, [5, 3])})
    assert stamps(merge) == [(0, 5), (0, 3)]


