"""librdkafka's clients (confluent-kafka) behind the interface of ``clients.base``.

librdkafka fetches, parses and sends in threads of its own, outside the GIL: polling and
ordering cost the learner's loop ~1 us a record, a send ~2 us (kafka-python's clients, which
parse in Python: ~15 us and 16 - 27 us). What is librdkafka's own stays here: its
``PARTITION_EOF`` markers become ``Batch.ended``, its rebalance callbacks (on the poll thread)
call the loop's with partitions, its errors become ``StreamLearnerError``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import confluent_kafka as rdkafka
import confluent_kafka.admin as rdkafka_admin

from consumers.clients.base import (
    BROKER_DEFAULT_RECORD_BYTES,
    DELIVERY_TIMEOUT_MS,
    MAX_REQUEST_BYTES,
    Batch,
    Delivery,
    Headers,
    OnAssign,
    OnRevoke,
    batch_bytes,
    security_settings,
)
from consumers.clients.kafka_log import KafkaLog
from stream_learner.config import Settings
from stream_learner.errors import PublishError, StreamLearnerError
from stream_learner.events import Partition

log = logging.getLogger("stream_learner")
KAFKA_LOG = KafkaLog(logging.getLogger("stream_learner.kafka"))

DEFAULT_BATCH_BYTES = 1_000_000  # librdkafka's batch.size
# The longest a prediction waits for others to share its batch: at full speed batches fill
# anyway; at half of it, 1 ms rather than librdkafka's 5 keeps ~3 ms off the median latency.
LINGER_MS = 1
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
    """The Kafka auth/TLS settings that apply (``clients.base.security_settings``), in
    librdkafka's names."""
    return {_SECURITY_NAMES[name]: value for name, value in security_settings(settings).items()}


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


def poll(consumer: rdkafka.Consumer, max_records: int, timeout: float, busy: float = 0.0) -> Batch:
    """What has arrived, up to ``max_records``, waiting up to ``timeout`` seconds for the first.
    (``consume`` alone would wait for a whole batch.) For the first ``busy`` seconds of the
    wait the thread asks again and again instead of sleeping (``--busy-poll-ms``). A partition
    whose last message here is a ``PARTITION_EOF`` marker is ``ended``; other errors are
    logged, or raised as ``StreamLearnerError`` when librdkafka calls them fatal."""
    messages, until = consumer.consume(max_records, 0), time.perf_counter() + busy
    while not messages and time.perf_counter() < until:
        messages = consumer.consume(max_records, 0)
    if not messages:
        first = consumer.poll(timeout)
        if first is None:
            return Batch([])
        messages = [first, *consumer.consume(max_records - 1, 0)] if max_records > 1 else [first]
    records: list[Any] = []
    ended: set[Partition] = set()
    for m in messages:
        error = m.error()
        if error is None:
            records.append(m)
            if ended:
                ended.discard((m.topic(), m.partition()))
        elif error.code() == rdkafka.KafkaError._PARTITION_EOF:
            ended.add((m.topic() or "", m.partition() or 0))
        elif error.fatal():
            raise StreamLearnerError(f"Kafka consumer: {error.str()}")
        else:
            KAFKA_LOG.log(logging.WARNING, "%s %s", "consumer", error.str())
    return Batch(records, frozenset(ended)) if ended else Batch(records)


def make_producer(settings: Settings, client_id: str = "stream-learner",
                  max_batch: int = BROKER_DEFAULT_RECORD_BYTES,
                  failures: list[str] | None = None) -> rdkafka.Producer:
    """librdkafka's producer (confluent-kafka): it builds and sends batches in threads of its
    own, outside the GIL; a send costs the loop ~2 us (kafka-python's producer: 16 - 27 us).
    Its batches stay below ``max_batch`` bytes (a topic's
    ``record_limit``); a larger record goes alone. With ``failures``, librdkafka reports failed
    sends alone, into that list. Construction does no network I/O."""
    reports: dict[str, Any] = {} if failures is None else {
        "delivery.report.only.error": True, "on_delivery": partial(_failed, failures)}
    try:
        return rdkafka.Producer({
            "bootstrap.servers": settings.bootstrap_servers,
            "client.id": client_id,
            "enable.idempotence": True,  # acks=all; retries neither duplicate nor reorder
            "linger.ms": LINGER_MS,
            "message.max.bytes": MAX_REQUEST_BYTES,
            "batch.size": batch_bytes(DEFAULT_BATCH_BYTES, max_batch),
            "message.timeout.ms": DELIVERY_TIMEOUT_MS,
            "queue.buffering.max.messages": QUEUED_MESSAGES,
            "partitioner": "murmur2_random",  # a key's partition as Java and kafka-python compute it
            "logger": KAFKA_LOG,
            **reports,
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


def _produce(producer: rdkafka.Producer, topic: str, value: bytes | None, key: bytes | None,
             on_delivery: Callable[[Any, Any], None] | None, *, headers: Headers | None = None,
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


def _failed(failures: list[str], error: rdkafka.KafkaError | None, message: rdkafka.Message) -> None:
    if error is not None:
        failures.append(f"{message.topic() or ''}: {error.str()}")


def _delivered(on_delivery: Callable[[Delivery], None], error: rdkafka.KafkaError | None,
               message: rdkafka.Message) -> None:
    """librdkafka's delivery report as a ``Delivery`` (a partial per send: cheaper than a closure)."""
    where = (message.topic() or "", message.partition() or 0)
    if error is not None:
        on_delivery(Delivery(where, -1, f"{where[0]}: {error.str()}"))
    else:
        on_delivery(Delivery(where, message.offset() or 0))


def commit(consumer: rdkafka.Consumer, offsets: Mapping[Partition, int], *, wait: bool) -> None:
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


def _lags(consumer: rdkafka.Consumer) -> dict[Partition, int | None]:
    """Records not read yet in each assigned partition, from what the last fetches said (no
    request to the broker); None while a partition's end is not known yet."""
    out: dict[Partition, int | None] = {}
    assigned = consumer.assignment()
    for tp, position in zip(assigned, consumer.position(assigned), strict=True):
        high = consumer.get_watermark_offsets(tp, cached=True)[1]
        known = high >= 0 and position.offset >= 0
        out[(tp.topic, tp.partition)] = max(0, high - position.offset) if known else None
    return out


def _topic_ends(reader: rdkafka.Consumer, topic: str, flag: str) -> dict[int, int]:
    """Partition -> end offset of ``topic`` (none while it does not exist)."""
    return _watermarks(reader, topic, flag, high=True)


def _topic_starts(reader: rdkafka.Consumer, topic: str, flag: str) -> dict[int, int]:
    """Partition -> the first offset ``topic`` still holds."""
    return _watermarks(reader, topic, flag, high=False)


def _watermarks(reader: rdkafka.Consumer, topic: str, flag: str, *, high: bool) -> dict[int, int]:
    try:
        found = reader.list_topics(topic, timeout=BROKER_WAIT_S).topics[topic]
        return {p: reader.get_watermark_offsets(rdkafka.TopicPartition(topic, p),
                                                timeout=BROKER_WAIT_S)[1 if high else 0]
                for p in sorted(found.partitions)}
    except rdkafka.KafkaException as exc:
        raise StreamLearnerError(f"{flag} {topic}: {exc.args[0].str()}") from None


def _offsets_for_time(reader: rdkafka.Consumer, topic: str, timestamp_ms: int, flag: str) -> dict[int, int]:
    """Partition -> the first offset at or after ``timestamp_ms``, or the end offset."""
    ends = _topic_ends(reader, topic, flag)
    try:
        found = reader.offsets_for_times([rdkafka.TopicPartition(topic, p, timestamp_ms) for p in ends],
                                         timeout=BROKER_WAIT_S)
    except rdkafka.KafkaException as exc:
        raise StreamLearnerError(f"{flag} {topic}: {exc.args[0].str()}") from None
    for tp in found:
        if tp.error is not None:
            raise StreamLearnerError(f"{flag} {topic}: {tp.error.str()}")
    return {tp.partition: tp.offset if tp.offset >= 0 else ends[tp.partition] for tp in found}


class RdConsumer:
    """librdkafka's consumer as a ``clients.base.Consumer``."""

    def __init__(self, consumer: rdkafka.Consumer, start_from: str = "earliest") -> None:
        self.consumer = consumer
        self.fresh = rdkafka.OFFSET_BEGINNING if start_from == "earliest" else rdkafka.OFFSET_END

    def subscribe(self, topics: list[str], *, on_assign: OnAssign, on_revoke: OnRevoke) -> None:
        def assigned(consumer: rdkafka.Consumer, partitions: list[rdkafka.TopicPartition]) -> None:
            starts = on_assign([(tp.topic, tp.partition) for tp in partitions])
            if starts is not None:  # else librdkafka assigns them at their committed positions
                for tp in partitions:
                    tp.offset = starts.get((tp.topic, tp.partition), self.fresh)
                consumer.assign(partitions)

        def revoked(_consumer: rdkafka.Consumer, partitions: list[rdkafka.TopicPartition]) -> None:
            on_revoke([(tp.topic, tp.partition) for tp in partitions])

        self.consumer.subscribe(topics, on_assign=assigned, on_revoke=revoked)

    def assign(self, starts: Mapping[Partition, int]) -> None:
        self.consumer.assign([rdkafka.TopicPartition(t, p, o) for (t, p), o in starts.items()])

    def unassign(self) -> None:
        self.consumer.unassign()

    def assignment(self) -> list[Partition]:
        return [(tp.topic, tp.partition) for tp in self.consumer.assignment()]

    def seek(self, partition: Partition, offset: int) -> None:
        self.consumer.seek(rdkafka.TopicPartition(partition[0], partition[1], offset))

    def poll(self, max_records: int, timeout: float, busy: float = 0.0) -> Batch:
        return poll(self.consumer, max_records, timeout, busy)

    def commit(self, offsets: Mapping[Partition, int], *, wait: bool) -> None:
        commit(self.consumer, offsets, wait=wait)

    def end_offsets(self, topic: str, flag: str) -> dict[int, int]:
        return _topic_ends(self.consumer, topic, flag)

    def start_offsets(self, topic: str, flag: str) -> dict[int, int]:
        return _topic_starts(self.consumer, topic, flag)

    def offsets_for_time(self, topic: str, timestamp_ms: int, flag: str) -> dict[int, int]:
        return _offsets_for_time(self.consumer, topic, timestamp_ms, flag)

    def lags(self) -> dict[Partition, int | None]:
        return _lags(self.consumer)

    def close(self) -> None:
        self.consumer.close()


class RdProducer:
    """librdkafka's producer as a ``clients.base.Producer``."""

    def __init__(self, producer: rdkafka.Producer, failures: list[str] | None = None) -> None:
        self.producer = producer
        self.failures_only = failures is not None
        self.failures = [] if failures is None else failures

    def send(self, topic: str, value: bytes | None, key: bytes | None = None, *,
             on_delivery: Callable[[Delivery], None] | None = None, headers: Headers | None = None,
             timestamp_ms: int = 0) -> None:
        report = None if on_delivery is None else partial(_delivered, on_delivery)
        _produce(self.producer, topic, value, key, report, headers=headers, timestamp_ms=timestamp_ms)

    def poll(self, timeout: float) -> None:
        self.producer.poll(timeout)

    def flush(self, timeout: float) -> int:
        return int(self.producer.flush(timeout))


class LibrdkafkaClients:
    """The service's clients, configured from its settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def consumer(self, mode: str) -> RdConsumer:
        return RdConsumer(make_consumer(self.settings, mode), self.settings.start_from)

    def reader(self) -> RdConsumer:
        return RdConsumer(make_reader(self.settings))

    def producer(self, client_id: str, max_batch: int = BROKER_DEFAULT_RECORD_BYTES, *,
                 failures_only: bool = False) -> RdProducer:
        failures: list[str] | None = [] if failures_only else None
        return RdProducer(make_producer(self.settings, client_id, max_batch, failures), failures)

    def record_limit(self, topic: str) -> int:
        return record_limit(self.settings, topic)

    def require_broker(self) -> None:
        require_broker(self.settings)
