"""Kafka plumbing shared by the learner and the predictor: clients, publishing, dead letters."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import confluent_kafka as rdkafka
import confluent_kafka.admin as rdkafka_admin

from consumers.kafka_log import KafkaLog
from stream_learner.config import Settings
from stream_learner.errors import PublishError, StreamLearnerError
from stream_learner.events import Source

log = logging.getLogger("stream_learner")
KAFKA_LOG = KafkaLog(logging.getLogger("stream_learner.kafka"))

Headers = list[tuple[str, str | bytes | None]]

# Room for the dead-letter copy of an oversized event; the broker still enforces its own limit.
MAX_REQUEST_BYTES = 64 * 1024 * 1024
# What a broker accepts in one record batch unless told otherwise (message.max.bytes).
BROKER_DEFAULT_RECORD_BYTES = 1_048_588
DEFAULT_BATCH_BYTES = 1_000_000  # librdkafka's batch.size
BATCH_FRAMING_BYTES = 1024
# The longest a prediction waits for others to share its batch: at full speed batches fill
# anyway; at half of it, 1 ms rather than librdkafka's 5 keeps ~3 ms off the median latency.
LINGER_MS = 1
DELIVERY_TIMEOUT_MS = 120_000
BROKER_WAIT_S = 10.0  # for a first answer from the cluster, before sending anything
# Sends count against this until their delivery report is taken (``Publisher.reap``).
QUEUED_MESSAGES = 1_000_000


# Our auth/TLS setting -> its name for librdkafka.
_SECURITY_NAMES = {
    "security_protocol": "security.protocol",
    "sasl_mechanism": "sasl.mechanism",
    "sasl_username": "sasl.username",
    "sasl_password": "sasl.password",
    "ssl_cafile": "ssl.ca.location",
}


def security_options(settings: Settings) -> dict[str, Any]:
    """The Kafka auth/TLS settings as they are, in librdkafka's names: the protocol always, the
    SASL settings with a mechanism, the CA file when given."""
    wanted = ["security_protocol"]
    if settings.sasl_mechanism:
        wanted += ["sasl_mechanism", "sasl_username", "sasl_password"]
    if settings.ssl_cafile:
        wanted.append("ssl_cafile")
    return {_SECURITY_NAMES[name]: getattr(settings, name) for name in wanted}


def make_consumer(settings: Settings, mode: str) -> rdkafka.Consumer:
    """librdkafka's consumer (confluent-kafka) in the service's group for ``mode``: it fetches
    and parses in threads of its own, outside the GIL: polling and ordering cost the learner's
    loop ~1 us a record (kafka-python's consumer, which parses in Python: ~15 us).
    Offsets are committed only by us.
    A learner's partitions say when they are read to their end (``PARTITION_EOF``), for the
    event-time merge. Rebalance callbacks run inside ``poll``/``consume``, on the loop's thread.
    Construction does no network I/O."""
    return _consumer(settings, {
        "group.id": settings.consumer_group(mode),
        "client.id": f"stream-learner-{mode}",
        "auto.offset.reset": settings.start_from,
        "enable.partition.eof": mode == "learn",
        # A topic subscribed to before it exists is created.
        "allow.auto.create.topics": True,
        # A seek (rewind) waits for the fetch in flight: keep its wait short.
        "fetch.wait.max.ms": 100,
        "session.timeout.ms": int(settings.session_timeout * 1000),
        "heartbeat.interval.ms": max(100, int(settings.session_timeout * 1000) // 4),
        "on_commit": _log_commit_failure,
    })


def make_reader(settings: Settings) -> rdkafka.Consumer:
    """A consumer that only reads what it is assigned, to its end: it joins no group and
    commits nothing (librdkafka wants a group id all the same)."""
    return _consumer(settings, {
        "group.id": f"{settings.consumer_group('learn')}.reader",
        "client.id": "stream-learner-reader",
        "enable.partition.eof": True,
    })


def _consumer(settings: Settings, config: dict[str, Any]) -> rdkafka.Consumer:
    try:
        return rdkafka.Consumer({
            "bootstrap.servers": settings.bootstrap_servers,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "logger": KAFKA_LOG,
            **config,
            **security_options(settings),
        })
    except rdkafka.KafkaException as exc:
        raise StreamLearnerError(f"Kafka consumer: {exc.args[0].str()}") from None


def poll(consumer: rdkafka.Consumer, max_records: int, timeout: float,
         busy: float = 0.0) -> list[rdkafka.Message]:
    """What has arrived, up to ``max_records``, waiting up to ``timeout`` seconds for the first:
    records, and ``PARTITION_EOF`` markers. Other errors are logged, or raised as
    ``StreamLearnerError`` when librdkafka calls them fatal. (``consume`` alone would wait for a
    whole batch.) For the first ``busy`` seconds of the wait the thread asks again and again
    instead of sleeping (``--busy-poll-ms``)."""
    messages, until = consumer.consume(max_records, 0), time.perf_counter() + busy
    while not messages and time.perf_counter() < until:
        messages = consumer.consume(max_records, 0)
    if not messages:
        first = consumer.poll(timeout)
        if first is None:
            return []
        messages = [first, *consumer.consume(max_records - 1, 0)] if max_records > 1 else [first]
    failed = [(m, e) for m in messages
              if (e := m.error()) is not None and e.code() != rdkafka.KafkaError._PARTITION_EOF]
    for _, error in failed:
        if error.fatal():
            raise StreamLearnerError(f"Kafka consumer: {error.str()}")
        KAFKA_LOG.log(logging.WARNING, "%s %s", "consumer", error.str())
    if failed:
        dropped = {id(m) for m, _ in failed}
        messages = [m for m in messages if id(m) not in dropped]
    return messages


class Poller:
    """A loop's asks for records (``poll``), busy polling only while the loop is busy.

    Busy polling (``busy`` seconds, ``--busy-poll-ms``) lowers the latency of a loop near its
    capacity, where waking a sleeping thread is slow, but would keep a core busy for a trickle
    of events. So the loop spins only while it has worked at least ``BUSY_SHARE`` of the last
    ``BUSY_WINDOW_S`` seconds: the time from each ask's return to the next ask, not the asking.
    """

    BUSY_SHARE = 1 / 3
    BUSY_WINDOW_S = 0.5

    def __init__(self, consumer: rdkafka.Consumer, max_records: int, timeout: float,
                 busy: float) -> None:
        self.consumer = consumer
        self.max_records = max_records
        self.timeout = timeout
        self.busy = busy
        self.spinning = False
        self.window_from = 0.0
        self.worked = 0.0  # in the window so far
        self.returned: float | None = None  # when the last ask returned

    def __call__(self, wait: bool = True) -> list[rdkafka.Message]:
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
            messages = poll(self.consumer, self.max_records, 0.0)
        else:
            busy = self.busy if self.spinning else 0.0
            messages = poll(self.consumer, self.max_records, self.timeout, busy)
        self.returned = time.perf_counter()
        return messages


def make_producer(settings: Settings, client_id: str = "stream-learner",
                  max_batch: int = BROKER_DEFAULT_RECORD_BYTES) -> rdkafka.Producer:
    """librdkafka's producer (confluent-kafka): it builds and sends batches in threads of its
    own, outside the GIL; a send costs the loop ~2 us (kafka-python's producer: 16 - 27 us).
    Its batches stay below ``max_batch`` bytes (a topic's
    ``record_limit``); a larger record goes alone. Construction does no network I/O."""
    try:
        return rdkafka.Producer({
            "bootstrap.servers": settings.bootstrap_servers,
            "client.id": client_id,
            "enable.idempotence": True,  # acks=all; retries neither duplicate nor reorder
            "linger.ms": LINGER_MS,
            "message.max.bytes": MAX_REQUEST_BYTES,
            "batch.size": max(1024, min(DEFAULT_BATCH_BYTES, max_batch - BATCH_FRAMING_BYTES)),
            "message.timeout.ms": DELIVERY_TIMEOUT_MS,
            "queue.buffering.max.messages": QUEUED_MESSAGES,
            "partitioner": "murmur2_random",  # a key's partition as Java and kafka-python compute it
            "logger": KAFKA_LOG,
            **security_options(settings),
        })
    except rdkafka.KafkaException as exc:
        raise StreamLearnerError(f"Kafka producer: {exc.args[0].str()}") from None


def record_limit(settings: Settings, topic: str) -> int:
    """The largest record batch ``topic`` accepts: its ``max.message.bytes``, or the broker's
    ``message.max.bytes`` while the topic does not exist (it is created with the broker's
    default), or Kafka's default when neither can be read (no DescribeConfigs permission)."""
    options: dict[str, Any] = {"bootstrap.servers": settings.bootstrap_servers, "logger": KAFKA_LOG,
                               **security_options(settings)}
    admin = rdkafka_admin.AdminClient(options)
    kinds: Any = rdkafka_admin  # its ConfigResource and ResourceType are not typed as exported
    try:
        resource = kinds.ConfigResource(kinds.ResourceType.TOPIC, topic)
        try:
            return int(admin.describe_configs([resource])[resource].result(BROKER_WAIT_S)
                       ["max.message.bytes"].value)
        except rdkafka.KafkaException as exc:
            if exc.args[0].code() != rdkafka.KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise
        brokers = admin.list_topics(timeout=BROKER_WAIT_S).brokers
        resource = kinds.ConfigResource(kinds.ResourceType.BROKER, str(min(brokers)))
        return int(admin.describe_configs([resource])[resource].result(BROKER_WAIT_S)
                   ["message.max.bytes"].value)
    except (rdkafka.KafkaException, KeyError, ValueError, TimeoutError) as exc:
        log.warning("cannot read the record size limit of %s (%s): assuming Kafka's default, %d bytes",
                    topic, exc, BROKER_DEFAULT_RECORD_BYTES)
        return BROKER_DEFAULT_RECORD_BYTES


def require_broker(settings: Settings) -> None:
    """``StreamLearnerError`` naming the flag unless a broker answers within
    ``--connect-timeout``: at start, librdkafka would otherwise retry for ever (and keep
    messages for ``DELIVERY_TIMEOUT_MS``). Once running, a broker that goes away is waited for."""
    options: dict[str, Any] = {"bootstrap.servers": settings.bootstrap_servers, "logger": KAFKA_LOG,
                               **security_options(settings)}
    admin = rdkafka_admin.AdminClient(options)
    try:
        admin.list_topics(timeout=settings.connect_timeout)
    except rdkafka.KafkaException as exc:
        raise StreamLearnerError(f"--bootstrap-servers {settings.bootstrap_servers}: no broker answered "
                                 f"in {settings.connect_timeout:g} s ({exc.args[0].str()})") from None


def produce(producer: rdkafka.Producer, topic: str, value: bytes | None, key: bytes | None,
            on_delivery: Callable[[Any, Any], None], *, headers: Headers | None = None,
            timestamp_ms: int = 0) -> None:
    """Queue one message (timestamp 0: now); while the queue is full, wait for it to drain."""
    while True:
        try:
            producer.produce(topic, value, key, on_delivery=on_delivery, headers=headers,
                             timestamp=timestamp_ms)
            return
        except BufferError:  # full of sends in flight or of delivery reports not yet taken
            producer.poll(0.1)
        except rdkafka.KafkaException as exc:
            raise PublishError(f"{topic}: {exc.args[0].str()}") from None


class Publisher:
    """Sends predictions and dead letters, and knows which sends the broker has acknowledged.

    Sends are numbered in order. ``reap`` serves the producer's delivery reports and takes the
    answered sends off the head, in order, so after ``reap(upto=n)`` has returned 0 the first
    ``n`` sends are all answered, ``published`` says where the sends among them ended in each
    partition, and a failure among them is in ``failures``. Delivery reports run in the thread
    that reaps or flushes (the loop's), never in the producer's.
    """

    def __init__(self, producer: rdkafka.Producer, settings: Settings) -> None:
        self.producer = producer
        self.predictions_topic = settings.predictions_topic
        self.failures: list[str] = []
        self.published: dict[str, int] = {}  # "topic:partition" -> next offset after the reaped
        self.sent = 0  # sends so far; the number of the next one
        self.reaped = 0
        # Delivery reports come in send order within a partition only: each waits here, by its
        # send number, until the sends before it are answered too.
        self._answers: dict[int, tuple[str | None, str, int]] = {}  # number -> (failure, tp, offset)

    def prediction(self, key: str, value: bytes) -> None:
        self.send(self.predictions_topic, value, key=key.encode())

    def send(self, topic: str, value: bytes | None, key: bytes | None = None,
             headers: Headers | None = None) -> None:
        produce(self.producer, topic, value, key, partial(self._answered, self.sent), headers=headers)
        self.sent += 1

    def _answered(self, number: int, error: rdkafka.KafkaError | None, message: rdkafka.Message) -> None:
        if error is not None:
            self._answers[number] = (f"{message.topic()}: {error.str()}", "", -1)
        else:
            tp = f"{message.topic()}:{message.partition() or 0}"
            self._answers[number] = (None, tp, message.offset() or 0)

    def reap(self, upto: int | None = None) -> int:
        """Take answered sends off the head, up to send number ``upto`` (default: all);
        return how many of those are still unanswered."""
        self.producer.poll(0)
        limit = self.sent if upto is None else upto
        answers = self._answers
        while self.reaped < limit and self.reaped in answers:
            failure, tp, offset = answers.pop(self.reaped)
            self.reaped += 1
            if failure is not None:
                self.failures.append(failure)
            elif offset >= self.published.get(tp, 0):
                self.published[tp] = offset + 1
        return max(0, limit - self.reaped)

    def check(self) -> None:
        """``PublishError`` if a reaped send failed."""
        if self.failures:
            failed, self.failures = self.failures, []
            raise PublishError(f"{len(failed)} sends were not acknowledged, first: {failed[0]}")

    def flush(self, upto: int | None = None) -> None:
        """Block until every send (or the first ``upto``) is answered; ``PublishError`` if one
        was not acknowledged."""
        wait_s = DELIVERY_TIMEOUT_MS / 1000 + 10  # librdkafka answers every send within its timeout
        deadline = time.monotonic() + wait_s
        while self.reap(upto):
            if time.monotonic() > deadline:
                raise PublishError(f"sends still unanswered after {wait_s:g} s")
            self.producer.poll(0.05)
        self.check()

    def close(self) -> None:
        """Send what is queued (within a few seconds) and let the producer go."""
        self.producer.flush(10)


def source_of(record: rdkafka.Message) -> Source:
    return Source(record.topic() or "", record.partition() or 0, record.offset() or 0,
                  record.timestamp()[1])


def commit(consumer: rdkafka.Consumer, offsets: dict[tuple[str, int], int], *, wait: bool) -> None:
    """Commit offsets ((topic, partition) -> next offset) to Kafka; a failure only logs (the
    next commit covers it).

    ``wait``: block until the group coordinator answers, as at shutdown. Otherwise the commit is
    sent and the caller goes on: a learner's timer does not hold its loop for the round trip
    (~10 ms); the answer comes to ``_log_commit_failure`` in a later poll.
    """
    if not offsets:
        return
    payload = [rdkafka.TopicPartition(t, p, o) for (t, p), o in offsets.items()]
    if not wait:
        consumer.commit(offsets=payload, asynchronous=True)
        return
    try:
        answered = consumer.commit(offsets=payload, asynchronous=False)
    except rdkafka.KafkaException as exc:
        KAFKA_LOG.log(logging.WARNING, "%s %s", "commit", f"offset commit failed: {exc.args[0].str()}")
        return
    _log_commit_failure(None, answered)


def _log_commit_failure(error: rdkafka.KafkaError | None, partitions: list[rdkafka.TopicPartition]) -> None:
    failed = [f"{tp.topic}/{tp.partition}: {tp.error.str()}" for tp in partitions if tp.error]
    if error is not None or failed:
        why = error.str() if error is not None else "; ".join(failed)
        KAFKA_LOG.log(logging.WARNING, "%s %s", "commit", f"offset commit failed: {why}")


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT, so the loop can finish its batch and checkpoint."""
    stop = threading.Event()

    def handler(signum: int, _frame: Any) -> None:
        log.info("received %s: stopping after this batch", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop
