"""The event-time merge against in-memory twins of records and end markers."""

from __future__ import annotations

import time
from dataclasses import dataclass

from consumers.clients.base import Batch
from consumers.ordering import EventTimeMerge

A, B = ("events", 0), ("events", 1)


@dataclass(frozen=True)
class Msg:
    """What the merge asks of a message: where it is from, its timestamp, whether it is a
    ``PARTITION_EOF`` marker."""

    where: tuple[str, int]
    offset_: int
    stamp: int
    eof: bool = False

    def topic(self) -> str:
        return self.where[0]

    def partition(self) -> int:
        return self.where[1]

    def offset(self) -> int:
        return self.offset_

    def timestamp(self) -> tuple[int, int]:
        return 1, self.stamp

    def error(self) -> object | None:
        return "PARTITION_EOF" if self.eof else None


def records(where: tuple[str, int], stamps: list[int], *, then_eof: bool = False) -> list[Msg]:
    out = [Msg(where, i, ts) for i, ts in enumerate(stamps)]
    return [*out, Msg(where, len(stamps), 0, eof=True)] if then_eof else out


def batch(messages: list[Msg]) -> Batch:
    """The batch a consumer makes of these messages: the records, and the partitions whose
    last message is an end marker."""
    last = {m.where: m.eof for m in messages}
    return Batch([m for m in messages if not m.eof], frozenset(p for p, eof in last.items() if eof))


def stamps(merge: EventTimeMerge) -> list[tuple[int, int]]:
    return [(r.partition(), r.timestamp()[1]) for r in merge.drain()]


def merge_of(*partitions: tuple[str, int], max_wait: float = 2.0) -> EventTimeMerge:
    merge = EventTimeMerge(max_wait=max_wait)
    merge.assign(partitions)
    return merge


def test_records_come_in_timestamp_order_across_partitions_while_the_order_is_certain() -> None:
    # Both partitions were read to their end.
    merge = merge_of(A, B)
    merge.add(batch(records(A, [1, 4, 6], then_eof=True) + records(B, [2, 5], then_eof=True)))
    assert stamps(merge) == [(0, 1), (1, 2), (0, 4), (1, 5), (0, 6)]
    assert merge.buffered == 0


def test_it_waits_for_a_partition_not_read_to_its_end() -> None:
    # B's buffer runs dry with no end marker after it: A's later records must wait.
    merge = merge_of(A, B, max_wait=60.0)
    merge.add(batch(records(A, [1, 4, 6], then_eof=True) + records(B, [2])))
    assert stamps(merge) == [(0, 1), (1, 2)]
    assert merge.buffered == 2
    merge.add(batch([Msg(B, 1, 5), Msg(B, 2, 0, eof=True)]))
    assert stamps(merge) == [(0, 4), (1, 5), (0, 6)]


def test_a_record_after_the_end_marker_makes_the_partition_unfinished_again() -> None:
    merge = merge_of(A, B, max_wait=60.0)
    merge.add(batch([Msg(B, 0, 0, eof=True), Msg(B, 0, 3), *records(A, [1, 4], then_eof=True)]))
    assert stamps(merge) == [(0, 1), (1, 3)]  # B may hold more before 4


def test_past_max_wait_everything_buffered_goes_on_without_the_laggard() -> None:
    merge = merge_of(A, B, max_wait=2.0)
    merge.add(batch(records(A, [1, 4, 6], then_eof=True)))
    assert stamps(merge) == []  # B has not answered a fetch yet: wait
    assert merge.waiting_since is not None
    merge.waiting_since = time.monotonic() - 2.5  # as if max_wait had passed
    assert stamps(merge) == [(0, 1), (0, 4), (0, 6)]
    merge.add(batch([Msg(A, 3, 7)]))
    assert stamps(merge) == [(0, 7)]  # still lagging: progress goes on, no new wait


def test_a_new_assignment_forgets_what_was_buffered_and_read() -> None:
    merge = merge_of(A, B, max_wait=60.0)
    merge.add(batch(records(A, [1], then_eof=True) + records(B, [2], then_eof=True)))
    merge.assign([A, B])
    assert merge.buffered == 0
    merge.add(batch(records(A, [1], then_eof=True)))
    assert stamps(merge) == []  # B is unread again


def test_one_partition_drains_in_its_own_order() -> None:
    merge = merge_of(A)
    merge.add(batch(records(A, [5, 3])))
    assert stamps(merge) == [(0, 5), (0, 3)]
