"""Kafka plumbing shared by the learner and the predictor: clients, publishing, dead letters."""

from __future__ import annotations

import logging
import signal
import threading
from collections import deque
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from kafka.partitioner.default import DefaultPartitioner
from kafka.structs import OffsetAndMetadata

from stream_learner.config import Settings
from stream_learner.engine import Engine
from stream_learner.errors import InvalidEvent, PublishError, StreamLearnerError
from stream_learner.events import FieldNames, Source, decode_event

log = logging.getLogger("stream_learner")

# Room for the dead-letter copy of an oversized event; the broker still enforces its own limit.
MAX_REQUEST_BYTES = 64 * 1024 * 1024
# kafka-python wakes its IO thread on every send once a partition has two batches queued, and
# each wakeup hands the GIL over: 16 KiB batches (the default) halve producer throughput.
# linger_ms still bounds how long a prediction waits, whatever the batch size.
BATCH_BYTES = 1024 * 1024
LINGER_MS = 5


def security_options(settings: Settings) -> dict[str, Any]:
    """The Kafka auth/TLS settings, passed through to kafka-python as they are."""
    options: dict[str, Any] = {"security_protocol": settings.security_protocol}
    if settings.sasl_mechanism:
        options["sasl_mechanism"] = settings.sasl_mechanism
        options["sasl_plain_username"] = settings.sasl_username
        options["sasl_plain_password"] = settings.sasl_password
    if settings.ssl_cafile:
        options["ssl_cafile"] = settings.ssl_cafile
    return options


def make_consumer(settings: Settings, mode: str) -> KafkaConsumer:
    try:
        consumer = KafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers.split(","),
            group_id=settings.consumer_group(mode),
            enable_auto_commit=False,
            auto_offset_reset=settings.start_from,
            max_poll_records=settings.max_poll_records,
            # A seek (rewind, revocation) waits for the fetch in flight: keep its wait short.
            fetch_max_wait_ms=100,
            session_timeout_ms=int(settings.session_timeout * 1000),
            heartbeat_interval_ms=max(100, int(settings.session_timeout * 1000) // 4),
            client_id=f"stream-learner-{mode}",
            **security_options(settings),
        )
    except KafkaError as exc:
        raise StreamLearnerError(f"--bootstrap-servers {settings.bootstrap_servers}: {exc}") from None
    _keep_rejoin_until_joined(consumer)
    return consumer


def _keep_rejoin_until_joined(consumer: KafkaConsumer) -> None:
    """Make a rejoin caused by new partitions last until the join completes.

    kafka-python (3.0.12) rejoins when the partitions it assigned as leader differ from the
    metadata, and stops wanting to once it has assigned again, before its SyncGroup returns. A
    poll that times out in between leaves the join unfinished for good: the leader keeps its
    place in the group with no partitions. Every other reason to rejoin stays set until the
    join completes; this makes that one do the same.
    """
    coordinator = consumer._coordinator
    wants_rejoin = coordinator.need_rejoin

    def need_rejoin() -> bool:
        if wants_rejoin():
            coordinator.request_rejoin()  # cleared by kafka-python once the join completes
            return True
        return False

    coordinator.need_rejoin = need_rejoin


class KeyPartitioner(DefaultPartitioner):  # type: ignore[misc]
    """Kafka's murmur2 of the key, as every client computes it; a topic of one partition
    skips the hash (pure Python in kafka-python, a few microseconds per message)."""

    def partition(self, topic: str, key: Any, serialized_key: bytes | None, value: Any,
                  serialized_value: Any, cluster: Any) -> int:
        partitions = cluster.partitions_for_topic(topic)
        if partitions is not None and len(partitions) == 1:
            return next(iter(partitions))  # type: ignore[no-any-return]
        return super().partition(topic, key, serialized_key, value, serialized_value,  # type: ignore[no-any-return]
                                 cluster)


def make_producer(settings: Settings, client_id: str = "stream-learner") -> KafkaProducer:
    try:
        return KafkaProducer(
            bootstrap_servers=settings.bootstrap_servers.split(","),
            acks="all", linger_ms=LINGER_MS, batch_size=BATCH_BYTES, max_request_size=MAX_REQUEST_BYTES,
            partitioner=KeyPartitioner(),
            retries=2_147_483_647, delivery_timeout_ms=120_000,
            client_id=client_id, **security_options(settings),
        )
    except KafkaError as exc:
        raise StreamLearnerError(f"--bootstrap-servers {settings.bootstrap_servers}: {exc}") from None


class Publisher:
    """Sends predictions and dead letters, and knows which sends the broker has acknowledged.

    Sends are numbered in order. ``reap`` takes the answered ones off the head of the queue,
    in order, so after ``reap(upto=n)`` has returned 0 the first ``n`` sends are all answered,
    ``published`` says where the predictions among them ended, and a failure among them is in
    ``failures``. No callback runs on the producer's thread: nothing here is shared with it.
    """

    def __init__(self, producer: KafkaProducer, settings: Settings,
                 dead_letters: dict[str, int] | None = None) -> None:
        self.producer = producer
        self.predictions_topic = settings.predictions_topic
        self.dead_letter_topic = settings.dead_letter_topic
        self.failures: list[str] = []
        self.published: dict[int, int] = {}  # predictions partition -> next offset after the reaped
        self.dead_letters = {} if dead_letters is None else dead_letters  # reason -> count
        self.sent = 0  # sends so far; the number of the next one
        self.reaped = 0
        self._unanswered: deque[Any] = deque()

    def prediction(self, key: str, value: bytes) -> None:
        self._unanswered.append(self.producer.send(self.predictions_topic, key=key.encode(), value=value))
        self.sent += 1

    def dead_letter(self, raw: bytes, error: InvalidEvent, source: Source) -> None:
        cause = error.__cause__ or error
        headers = [
            ("reason", error.reason.encode()),
            ("detail", error.detail[:1000].encode()),
            ("source.topic", source.topic.encode()),
            ("source.partition", str(source.partition).encode()),
            ("source.offset", str(source.offset).encode()),
            ("exception", type(cause).__name__.encode()),
        ]
        self.dead_letters[error.reason] = self.dead_letters.get(error.reason, 0) + 1
        log.warning("dead letter %s: %s", source, error)
        self._unanswered.append(self.producer.send(self.dead_letter_topic, value=raw, headers=headers))
        self.sent += 1

    def reap(self, upto: int | None = None) -> int:
        """Take answered sends off the head, up to send number ``upto`` (default: all);
        return how many of those are still unanswered."""
        limit = self.sent if upto is None else upto
        queue = self._unanswered
        while self.reaped < limit and queue[0].is_done:
            future = queue.popleft()
            self.reaped += 1
            if future.failed():
                exc = future.exception
                self.failures.append(f"{type(exc).__name__}: {exc}")
                continue
            meta = future.value
            if meta.topic == self.predictions_topic and meta.offset >= self.published.get(meta.partition, 0):
                self.published[meta.partition] = meta.offset + 1
        return max(0, limit - self.reaped)

    def check(self) -> None:
        """``PublishError`` if a reaped send failed."""
        if self.failures:
            failed, self.failures = self.failures, []
            raise PublishError(f"{len(failed)} sends were not acknowledged, first: {failed[0]}")

    def flush(self, upto: int | None = None) -> None:
        """Block until every send (or the first ``upto``) is answered; ``PublishError`` if one
        was not acknowledged."""
        try:
            self.producer.flush(timeout=120)
        except KafkaError as exc:
            raise PublishError(f"producer flush failed: {exc}") from None
        if self.reap(upto):
            raise PublishError("producer flush returned with sends unanswered")
        self.check()


def process_record(record: Any, engine: Engine, publisher: Publisher, fields: FieldNames,
                   settings: Settings) -> None:
    """Decode, predict (and learn), publish the prediction or the dead letter."""
    source = Source(record.topic, record.partition, record.offset, record.timestamp)
    raw = record.value or b""
    try:
        event = decode_event(raw, source, fields, engine.state.task, settings.max_event_bytes,
                             settings.max_abs_value)
        prediction = engine.process(event)
    except InvalidEvent as exc:
        publisher.dead_letter(raw, exc, source)
    else:
        publisher.prediction(event.key or event.id, prediction)


def commit(consumer: KafkaConsumer, offsets: dict[TopicPartition, int], *, in_listener: bool = False) -> None:
    """Commit offsets to Kafka; a failure only logs (the next commit covers it).

    A rebalance listener runs on kafka-python's IO thread, where a blocking commit is
    refused: there the commit is sent asynchronously, ahead of the group leave or rejoin.
    Elsewhere it is synchronous: an asynchronous commit still in flight when the group
    rebalances or the coordinator moves can hold the consumer up.
    """
    if not offsets:
        return
    payload = {tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()}
    if in_listener:
        consumer.commit_async(payload, callback=_log_commit_failure)
        return
    try:
        consumer.commit(payload)
    except KafkaError as exc:
        log.warning("offset commit failed: %s", exc)


def _log_commit_failure(_offsets: Any, response: Any) -> None:
    if isinstance(response, BaseException):
        log.warning("offset commit failed: %s", response)


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT, so the loop can finish its batch and checkpoint."""
    stop = threading.Event()

    def handler(signum: int, _frame: Any) -> None:
        log.info("received %s: stopping after this batch", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop
