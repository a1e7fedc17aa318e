"""librdkafka's ``poll`` and the ``Poller`` against an in-memory twin of librdkafka's consumer."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import confluent_kafka as rdkafka
import pytest

from consumers import kafka_io
from consumers.clients import librdkafka
from consumers.clients.base import Batch
from consumers.clients.librdkafka import RdConsumer, poll
from consumers.kafka_io import Poller
from stream_learner.errors import StreamLearnerError


class Msg:
    def __init__(self, error: rdkafka.KafkaError | None = None, partition: int = 0) -> None:
        self._error = error
        self._partition = partition

    def topic(self) -> str:
        return "events"

    def partition(self) -> int:
        return self._partition

    def error(self) -> rdkafka.KafkaError | None:
        return self._error


class ConsumerTwin:
    """Hands out queued messages as ``consume`` and ``poll`` do, and notes how long each waited."""

    def __init__(self, queued: list[Msg], arrives_after: int = 0, tick: float = 0.0) -> None:
        self.queued = queued
        self.arrives_after = arrives_after  # calls that find nothing before the queue shows up
        self.waits: list[float] = []
        self.clock = 0.0  # seconds, advanced by ``tick`` per ``consume``: a busy poll's time
        self.tick = tick

    def consume(self, num_messages: int, timeout: float) -> list[Msg]:
        self.waits.append(timeout)
        self.clock += self.tick
        if len(self.waits) <= self.arrives_after:
            return []
        taken, self.queued = self.queued[:num_messages], self.queued[num_messages:]
        return taken

    def poll(self, timeout: float) -> Msg | None:
        self.waits.append(timeout)
        if self.queued:
            return self.queued.pop(0)
        self.clock += timeout  # blocked for all of it
        return None


EOF_ = rdkafka.KafkaError(rdkafka.KafkaError._PARTITION_EOF)


def test_records_and_end_markers_pass_and_other_errors_are_logged_and_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    record, end = Msg(), Msg(EOF_)
    broken = Msg(rdkafka.KafkaError(rdkafka.KafkaError._TRANSPORT, "broker down"))
    again, read_again = Msg(EOF_, partition=1), Msg(partition=1)  # an end, then more records
    consumer: Any = ConsumerTwin([record, broken, end, again, read_again])
    with caplog.at_level(logging.WARNING, logger="stream_learner"):
        got = poll(consumer, 10, 0.1)
    assert got == Batch([record, read_again], frozenset({("events", 0)}))
    assert "broker down" in caplog.text
    assert consumer.waits == [0]  # something was queued: no wait at all


def test_a_fatal_error_is_raised() -> None:
    fatal = Msg(rdkafka.KafkaError(rdkafka.KafkaError._FENCED, "fenced", fatal=True))
    consumer: Any = ConsumerTwin([Msg(), fatal])
    with pytest.raises(StreamLearnerError, match="fenced"):
        poll(consumer, 10, 0.1)


def test_only_the_first_record_is_waited_for_never_a_whole_batch() -> None:
    consumer: Any = ConsumerTwin([])
    assert poll(consumer, 500, 0.25) == Batch([])
    assert consumer.waits == [0, 0.25]


def test_a_busy_poll_takes_what_arrives_while_it_asks_without_ever_blocking() -> None:
    record = Msg()
    consumer: Any = ConsumerTwin([record], arrives_after=3)
    assert poll(consumer, 500, 0.25, busy=10.0).records == [record]
    assert consumer.waits == [0, 0, 0, 0]


def test_a_busy_poll_blocks_once_its_time_is_up(monkeypatch: pytest.MonkeyPatch) -> None:
    consumer: Any = ConsumerTwin([], tick=0.0004)
    monkeypatch.setattr(librdkafka, "time", SimpleNamespace(perf_counter=lambda: consumer.clock))
    assert poll(consumer, 500, 0.25, busy=0.001) == Batch([])
    # Each ask takes 0.4 ms and the busy time runs 1 ms from the first's end: four asks, then a block.
    assert consumer.waits == [0, 0, 0, 0, 0.25]


def test_a_poller_busy_polls_only_while_its_loop_works_a_third_of_the_time_or_more(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tick = 2.0**-10  # seconds per ask; powers of two, so that the twin's clock adds up exactly
    consumer: Any = ConsumerTwin([], tick=tick)
    clock = SimpleNamespace(perf_counter=lambda: consumer.clock)
    monkeypatch.setattr(kafka_io, "time", clock)
    monkeypatch.setattr(librdkafka, "time", clock)
    # Each ask that finds nothing blocks for a whole window (0.5 s), so each ask judges the
    # work done since the one before.
    poller = Poller(RdConsumer(consumer), 500, Poller.BUSY_WINDOW_S, busy=8 * tick)

    def asks_after(work: float) -> int:
        """The loop works ``work`` seconds, then asks: how many asks before it blocks."""
        consumer.clock += work
        consumer.waits.clear()
        assert poller() == Batch([])
        assert consumer.waits[-1] == Poller.BUSY_WINDOW_S
        return len(consumer.waits) - 1

    assert asks_after(0.0) == 1  # the first ask
    # Working 0.125 s to each 0.5 s blocked is a fifth of the time: it never spins.
    assert [asks_after(0.125) for _ in range(4)] == [1] * 4
    # Half the time: it spins for its busy time, eight asks' worth, before it blocks.
    assert [asks_after(0.5) for _ in range(3)] == [9] * 3
    # Idle again: it stops spinning.
    assert [asks_after(0.0) for _ in range(2)] == [1] * 2
