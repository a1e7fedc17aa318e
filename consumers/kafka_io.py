"""The loops' Kafka I/O over the client interface (consumers/clients): asking for records
(``Poller``) and sending with acknowledgements (``Publisher``)."""

from __future__ import annotations

import time
from functools import partial

from consumers.clients.base import DELIVERY_TIMEOUT_MS, Batch, Consumer, Delivery, Headers, Producer, Record
from stream_learner.config import Settings
from stream_learner.errors import PublishError
from stream_learner.events import Partition, Source


class Poller:
    """A loop's asks for records (``poll``), busy polling only while the loop is busy.

    Busy polling (``busy`` seconds, ``--busy-poll-ms``) lowers the latency of a loop near its
    capacity, where waking a sleeping thread is slow, but would keep a core busy for a trickle
    of events. So the loop spins only while it has worked at least ``BUSY_SHARE`` of the last
    ``BUSY_WINDOW_S`` seconds: the time from each ask's return to the next ask, not the asking.
    """

    BUSY_SHARE = 1 / 3
    BUSY_WINDOW_S = 0.5

    def __init__(self, consumer: Consumer, max_records: int, timeout: float, busy: float) -> None:
        self.consumer = consumer
        self.max_records = max_records
        self.timeout = timeout
        self.busy = busy
        self.spinning = False
        self.window_from = 0.0
        self.worked = 0.0  # in the window so far
        self.returned: float | None = None  # when the last ask returned

    def __call__(self, wait: bool = True) -> Batch:
        """What has arrived; ``wait=False``: what has arrived already, without waiting."""
        asked = time.perf_counter()
        if self.returned is None:
            self.window_from = asked
        else:
            self.worked += asked - self.returned
            if asked - self.window_from >= self.BUSY_WINDOW_S:
                self.spinning = self.worked >= self.BUSY_SHARE * (asked - self.window_from)
                self.window_from, self.worked = asked, 0.0
        if not wait:
            batch = self.consumer.poll(self.max_records, 0.0)
        else:
            batch = self.consumer.poll(self.max_records, self.timeout, self.busy if self.spinning else 0.0)
        self.returned = time.perf_counter()
        return batch


class Publisher:
    """Sends predictions and dead letters, and knows which sends the broker has acknowledged.

    Sends are numbered in order. ``reap`` serves the producer's delivery reports and takes the
    answered sends off the head, in order, so after ``reap(upto=n)`` has returned 0 the first
    ``n`` sends are all answered, ``published`` says where the sends among them ended in each
    partition, and a failure among them is in ``failures``. Delivery reports run in the thread
    that reaps or flushes (the loop's), never in the producer's.

    On a producer made ``failures_only`` (a predictor's: it needs to know only that every send
    before a commit was acknowledged), sends are not tracked one by one: ``reap`` serves the
    failures' reports and answers 0, and ``flush`` waits for the producer's queue to drain.
    """

    def __init__(self, producer: Producer, settings: Settings) -> None:
        self.producer = producer
        self.tracked = not producer.failures_only
        self.predictions_topic = settings.predictions_topic
        self.failures: list[str] = []
        self.published: dict[Partition, int] = {}  # -> the next offset after the reaped
        self.sent = 0  # sends so far; the number of the next one
        self.reaped = 0
        # Delivery reports come in send order within a partition only: each waits here, by its
        # send number, until the sends before it are answered too.
        self._answers: dict[int, Delivery] = {}  # send number -> its answer

    def prediction(self, key: str, value: bytes) -> None:
        self.send(self.predictions_topic, value, key=key.encode())

    def send(self, topic: str, value: bytes | None, key: bytes | None = None,
             headers: Headers | None = None) -> None:
        report = partial(self._answered, self.sent) if self.tracked else None
        self.producer.send(topic, value, key, on_delivery=report, headers=headers)
        self.sent += 1

    def _answered(self, number: int, delivery: Delivery) -> None:
        self._answers[number] = delivery

    def reap(self, upto: int | None = None) -> int:
        """Take answered sends off the head, up to send number ``upto`` (default: all);
        return how many of those are still unanswered."""
        self.producer.poll(0)
        if not self.tracked:
            return 0
        limit = self.sent if upto is None else upto
        answers = self._answers
        while self.reaped < limit and self.reaped in answers:
            tp, offset, failure = answers.pop(self.reaped)
            self.reaped += 1
            if failure is not None:
                self.failures.append(failure)
            elif offset >= self.published.get(tp, 0):
                self.published[tp] = offset + 1
        return max(0, limit - self.reaped)

    def check(self) -> None:
        """``PublishError`` if a reaped send failed."""
        if self.producer.failures:
            self.failures.extend(self.producer.failures)
            self.producer.failures.clear()
        if self.failures:
            failed, self.failures = self.failures, []
            raise PublishError(f"{len(failed)} sends were not acknowledged, first: {failed[0]}")

    def flush(self, upto: int | None = None) -> None:
        """Block until every send (or the first ``upto``; untracked: every send) is answered;
        ``PublishError`` if one was not acknowledged."""
        wait_s = DELIVERY_TIMEOUT_MS / 1000 + 10  # a producer answers every send within it
        if not self.tracked:
            if self.producer.flush(wait_s):
                raise PublishError(f"sends still unanswered after {wait_s:g} s")
            self.check()
            return
        deadline = time.monotonic() + wait_s
        while self.reap(upto):
            if time.monotonic() > deadline:
                raise PublishError(f"sends still unanswered after {wait_s:g} s")
            self.producer.poll(0.05)
        self.check()

    def close(self) -> None:
        """Send what is queued (within a few seconds) and let the producer go."""
        self.producer.flush(10)


def source_of(record: Record) -> Source:
    return Source(record.topic() or "", record.partition() or 0, record.offset() or 0,
                  record.timestamp()[1])
