"""kafka-python's clients behind the interface of ``clients.base``: the client the project is
specified with, in pure Python.

kafka-python parses records and builds batches in Python, under the GIL: a record costs the
loop several times what it costs with librdkafka (docs/performance.md). What is kafka-python's
own stays here:

- Its network runs on an IO thread of its own, which calls the rebalance listener while the
  loop's thread waits inside ``poll`` (or ``close``): the loop's callbacks run there, never
  beside the loop, and what they raise comes out of ``poll``. A commit asked for there is sent
  without waiting, since a blocking call on that thread is refused.
- It has no end-of-partition events: a partition is read to its end when its position has
  reached the high watermark its last fetch reported.
- A send is a future; its ``Delivery`` is handed over in ``poll`` or ``flush``, on the
  caller's thread.
- Its records are named tuples: ``KpRecord`` gives them librdkafka's accessors.
- Its clients talk to the cluster as they are made, so they are made when first asked for.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import kafka
import kafka.errors as kafka_errors
from kafka.admin import ConfigResource, KafkaAdminClient
from kafka.partitioner.default import DefaultPartitioner
from kafka.structs import OffsetAndMetadata, TopicPartition

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

# kafka-python wakes its IO thread on every send once a partition has two batches queued, and
# each wakeup hands the GIL over: its 16 KiB default batches halve the producer's throughput.
DEFAULT_BATCH_BYTES = 1024 * 1024
LINGER_MS = 1  # as the librdkafka producer's
BROKER_WAIT_MS = 10_000  # for an answer to an admin or offsets request

# Our auth/TLS setting -> its name for kafka-python.
_SECURITY_NAMES = {
    "security_protocol": "security_protocol",
    "sasl_mechanism": "sasl_mechanism",
    "sasl_username": "sasl_plain_username",
    "sasl_password": "sasl_plain_password",
    "ssl_cafile": "ssl_cafile",
}


def security_options(settings: Settings) -> dict[str, Any]:
    """The Kafka auth/TLS settings that apply (``clients.base.security_settings``), in
    kafka-python's names."""
    return {_SECURITY_NAMES[name]: value for name, value in security_settings(settings).items()}


def _common(settings: Settings) -> dict[str, Any]:
    return {"bootstrap_servers": settings.bootstrap_servers.split(","),
            "bootstrap_timeout_ms": int(settings.connect_timeout * 1000), **security_options(settings)}


class _ToKafkaLog(logging.Handler):
    """kafka-python's log lines, through ``KafkaLog``: each kind once, then summed up; or, while
    ``held`` is a list, kept there instead."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.held: list[str] | None = None

    # A topic subscribed or sent to before it exists: kafka-python says so as a warning or an
    # error, then the broker creates the topic and the client goes on (librdkafka says nothing).
    NOT_YET = ("not found in cluster metadata", "No partition metadata for topic")

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if self.held is not None:
            self.held.append(message)
        elif any(text in message for text in self.NOT_YET):
            log.debug("Kafka: %s", message)
        else:
            KAFKA_LOG.log(record.levelno, "%s %s", record.name, message)


def route_kafka_log() -> _ToKafkaLog:
    """Send the ``kafka`` loggers' lines (WARNING and above) through ``KafkaLog``, once."""
    logger = logging.getLogger("kafka")
    for handler in logger.handlers:
        if isinstance(handler, _ToKafkaLog):
            return handler
    handler = _ToKafkaLog()
    logger.addHandler(handler)
    logger.propagate = False
    return handler


class KpRecord:
    """A kafka-python record with librdkafka's accessors (``clients.base.Record``)."""

    __slots__ = ("_r",)

    def __init__(self, record: Any) -> None:
        self._r = record

    def topic(self) -> str:
        return self._r.topic  # type: ignore[no-any-return]

    def partition(self) -> int:
        return self._r.partition  # type: ignore[no-any-return]

    def offset(self) -> int:
        return self._r.offset  # type: ignore[no-any-return]

    def key(self) -> bytes | None:
        return self._r.key  # type: ignore[no-any-return]

    def value(self) -> bytes | None:
        return self._r.value  # type: ignore[no-any-return]

    def timestamp(self) -> tuple[int, int]:
        """(librdkafka's kind: 1 create time, 2 log-append time; milliseconds)."""
        return self._r.timestamp_type + 1, self._r.timestamp

    def headers(self) -> Headers:
        return list(self._r.headers or [])


class _Listener(kafka.ConsumerRebalanceListener):  # type: ignore[misc]
    """The loop's callbacks, on kafka-python's IO thread: an error is kept for ``poll``."""

    def __init__(self, owner: KpConsumer, on_assign: OnAssign, on_revoke: OnRevoke) -> None:
        self.owner = owner
        self.on_assign = on_assign
        self.on_revoke = on_revoke

    def on_partitions_revoked(self, revoked: Any) -> None:
        self.owner.in_listener(lambda: self.on_revoke([(tp.topic, tp.partition) for tp in revoked]))

    def on_partitions_lost(self, lost: Any) -> None:
        self.on_partitions_revoked(lost)  # as librdkafka does without a lost callback

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.owner.in_listener(lambda: self.owner.start(list(assigned), self.on_assign))


class KpConsumer:
    """kafka-python's consumer as a ``clients.base.Consumer``; ``ends``: say when a partition
    is read to its end (``Batch.ended``)."""

    def __init__(self, make: Callable[[], Any], *, start_from: str = "earliest", ends: bool = False) -> None:
        self.make = make
        self.start_from = start_from
        self.ends = ends
        self._consumer: Any = None
        self._listening = False
        self._error: BaseException | None = None

    @property
    def consumer(self) -> Any:
        if self._consumer is None:
            self._consumer = _kafka_call("Kafka consumer", self.make)
            keep_rejoin_until_joined(self._consumer)
            return_what_was_fetched(self._consumer)
        return self._consumer

    def in_listener(self, callback: Callable[[], None]) -> None:
        self._listening = True
        try:
            callback()
        except Exception as exc:  # handed to the loop, which polled
            if self._error is None:
                self._error = exc
        finally:
            self._listening = False

    def start(self, assigned: list[Any], on_assign: OnAssign) -> None:
        """Position newly assigned partitions where ``on_assign`` says, the others it does not
        name at --start-from; None: where the group committed them."""
        starts = on_assign([(tp.topic, tp.partition) for tp in assigned])
        if starts is None:
            return
        fresh = []
        for tp in assigned:
            offset = starts.get((tp.topic, tp.partition))
            if offset is None:
                fresh.append(tp)
            else:
                self.consumer.seek(tp, offset)
        if fresh and self.start_from == "earliest":
            self.consumer.seek_to_beginning(*fresh)
        elif fresh:
            self.consumer.seek_to_end(*fresh)

    def subscribe(self, topics: list[str], *, on_assign: OnAssign, on_revoke: OnRevoke) -> None:
        self.consumer.subscribe(topics, listener=_Listener(self, on_assign, on_revoke))

    def assign(self, starts: Mapping[Partition, int]) -> None:
        self.consumer.assign([TopicPartition(t, p) for t, p in starts])
        for (t, p), offset in starts.items():
            self.consumer.seek(TopicPartition(t, p), offset)

    def unassign(self) -> None:
        self.consumer.assign([])

    def assignment(self) -> list[Partition]:
        return [(tp.topic, tp.partition) for tp in self.consumer.assignment()]

    def seek(self, partition: Partition, offset: int) -> None:
        self.consumer.seek(TopicPartition(*partition), offset)

    def poll(self, max_records: int, timeout: float, busy: float = 0.0) -> Batch:
        """As librdkafka's ``poll`` (``clients.librdkafka.poll``). kafka-python hands out what
        one fetch brought: what else has arrived is taken at once, so that the event-time
        merge sees every partition's records."""
        got = self._poll(0, max_records)
        until = time.perf_counter() + busy
        while not got and time.perf_counter() < until:
            got = self._poll(0, max_records)
        if not got:
            got = self._poll(int(timeout * 1000), max_records)
        records = [KpRecord(r) for rs in got.values() for r in rs]
        for _ in range(len(self.consumer.assignment()) - 1):
            if not got or len(records) >= max_records:
                break
            got = self._poll(0, max_records - len(records))
            records += [KpRecord(r) for rs in got.values() for r in rs]
        ended = self._ended() if self.ends else frozenset()
        return Batch(records, ended) if ended else Batch(records)

    def _poll(self, timeout_ms: int, max_records: int) -> dict[Any, list[Any]]:
        """One ask; what a rebalance callback raised comes out here, a retriable error of the
        client is logged (it retries), another is a ``StreamLearnerError``."""
        got: dict[Any, list[Any]] = {}
        try:
            got = self.consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        except kafka_errors.KafkaError as exc:
            if self._error is None and not exc.retriable:
                raise StreamLearnerError(f"Kafka consumer: {exc}") from None
            if self._error is None:
                KAFKA_LOG.log(logging.WARNING, "%s %s", "consumer", str(exc))
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return got

    def _ended(self) -> frozenset[Partition]:
        consumer, ended = self.consumer, set()
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is not None:
                position = consumer.position(tp, timeout_ms=0)
                if position is not None and position >= high:
                    ended.add((tp.topic, tp.partition))
        return frozenset(ended)

    def commit(self, offsets: Mapping[Partition, int], *, wait: bool) -> None:
        """As librdkafka's ``commit``; in a rebalance callback it never waits (see above)."""
        if not offsets:
            return
        payload = {TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()}
        try:
            if wait and not self._listening:
                self.consumer.commit(payload)
            else:
                self.consumer.commit_async(payload, callback=_log_commit_failure)
        except kafka_errors.KafkaError as exc:
            KAFKA_LOG.log(logging.WARNING, "%s %s", "commit", f"offset commit failed: {exc}")

    def end_offsets(self, topic: str, flag: str) -> dict[int, int]:
        try:
            partitions = sorted(self.consumer.partitions_for_topic(topic))
            ends = self.consumer.end_offsets([TopicPartition(topic, p) for p in partitions],
                                             timeout_ms=BROKER_WAIT_MS)
        except kafka_errors.KafkaError as exc:
            raise StreamLearnerError(f"{flag} {topic}: {exc}") from None
        return {tp.partition: offset for tp, offset in ends.items()}

    def _partitions(self, topic: str) -> list[TopicPartition]:
        return [TopicPartition(topic, p) for p in sorted(self.consumer.partitions_for_topic(topic) or ())]

    def start_offsets(self, topic: str, flag: str) -> dict[int, int]:
        try:
            starts = self.consumer.beginning_offsets(self._partitions(topic), timeout_ms=BROKER_WAIT_MS)
        except kafka_errors.KafkaError as exc:
            raise StreamLearnerError(f"{flag} {topic}: {exc}") from None
        return {tp.partition: offset for tp, offset in starts.items()}

    def offsets_for_time(self, topic: str, timestamp_ms: int, flag: str) -> dict[int, int]:
        try:
            partitions = self._partitions(topic)
            found = self.consumer.offsets_for_times(dict.fromkeys(partitions, timestamp_ms),
                                                    timeout_ms=BROKER_WAIT_MS)
            ends = self.consumer.end_offsets(partitions, timeout_ms=BROKER_WAIT_MS)
        except kafka_errors.KafkaError as exc:
            raise StreamLearnerError(f"{flag} {topic}: {exc}") from None
        return {tp.partition: ends[tp] if found.get(tp) is None else found[tp].offset for tp in partitions}

    def lags(self) -> dict[Partition, int | None]:
        consumer, out = self.consumer, {}
        for tp in consumer.assignment():
            high, position = consumer.highwater(tp), consumer.position(tp, timeout_ms=0)
            known = high is not None and position is not None
            out[(tp.topic, tp.partition)] = max(0, high - position) if known else None
        return out

    def close(self) -> None:
        """Leave the group (its partitions are revoked first, as librdkafka's close does)."""
        if self._consumer is not None:
            try:
                self._consumer.close(autocommit=False)
            except kafka_errors.KafkaError as exc:
                log.warning("Kafka consumer: close: %s", exc)
            if self._error is not None:  # the loop is ending already: not raised over its cause
                log.warning("Kafka consumer: a rebalance callback failed at close: %s", self._error)
                self._error = None


def _log_commit_failure(_offsets: Any, response: Any) -> None:
    if isinstance(response, BaseException):
        KAFKA_LOG.log(logging.WARNING, "%s %s", "commit", f"offset commit failed: {response}")


def keep_rejoin_until_joined(consumer: Any) -> None:
    """Make a rejoin caused by new partitions last until the join completes.

    kafka-python (3.0) rejoins when the partitions it assigned as leader differ from the
    metadata, and stops wanting to once it has assigned again, before its SyncGroup returns. A
    poll that times out in between leaves the join unfinished for good: the leader keeps its
    place in the group with no partitions. Every other reason to rejoin stays set until the
    join completes; this makes that one do the same.
    """
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is None or not hasattr(coordinator, "request_rejoin"):
        return
    wants_rejoin = coordinator.need_rejoin

    def need_rejoin() -> bool:
        if wants_rejoin():
            coordinator.request_rejoin()  # cleared by kafka-python once the join completes
            return True
        return False

    coordinator.need_rejoin = need_rejoin


def return_what_was_fetched(consumer: Any) -> None:
    """Make ``poll()`` return records that arrived while it looked for work, not sleep on them.

    kafka-python (3.0) drains its buffer, then sends the next fetches, which may first take in
    the response of the fetch in flight and drop that (now done) fetch from the ones to wait on.
    With nothing left to wait on, ``poll()`` takes itself for idle and sleeps
    ``retry_backoff_ms`` (100 ms) with the records buffered: the latency's p99 goes to ~200 ms
    at 10,000 events/s. When it says idle with records buffered, this drains them at once.
    """
    fetcher = getattr(consumer, "_fetcher", None)
    if fetcher is None or not hasattr(fetcher, "_completed_fetches"):
        return
    fetch_records = fetcher.fetch_records

    def fetch_buffered_first(max_records: int | None = None, update_offsets: bool = True,
                             timeout_ms: float | None = None) -> tuple[dict[Any, list[Any]], bool]:
        records, idle = fetch_records(max_records, update_offsets=update_offsets, timeout_ms=timeout_ms)
        if idle and not records and fetcher._completed_fetches:
            records, _ = fetcher.fetched_records(max_records, update_offsets=update_offsets)
            return records, False
        return records, idle

    fetcher.fetch_records = fetch_buffered_first


class KeyPartitioner(DefaultPartitioner):  # type: ignore[misc]
    """Kafka's murmur2 of the key, as every client computes it; a topic of one partition
    skips the hash (pure Python in kafka-python, a few microseconds a record)."""

    def partition(self, topic: str, key: Any, serialized_key: bytes | None, value: Any,
                  serialized_value: Any, cluster: Any) -> int:
        partitions = cluster.partitions_for_topic(topic)
        if partitions is not None and len(partitions) == 1:
            return next(iter(partitions))  # type: ignore[no-any-return]
        return super().partition(topic, key, serialized_key, value,  # type: ignore[no-any-return]
                                 serialized_value, cluster)


class KpProducer:
    """kafka-python's producer as a ``clients.base.Producer``. Sends wait in order for their
    futures; ``poll`` and ``flush`` hand the answered ones over, on the caller's thread."""

    def __init__(self, make: Callable[[], Any], failures_only: bool = False) -> None:
        self.make = make
        self.failures_only = failures_only
        self.failures: list[str] = []
        self._producer: Any = None
        self._unanswered: deque[tuple[Any, Callable[[Delivery], None] | None]] = deque()

    @property
    def producer(self) -> Any:
        if self._producer is None:
            self._producer = _kafka_call("Kafka producer", self.make)
        return self._producer

    def send(self, topic: str, value: bytes | None, key: bytes | None = None, *,
             on_delivery: Callable[[Delivery], None] | None = None, headers: Headers | None = None,
             timestamp_ms: int = 0) -> None:
        encoded = [(k, v.encode() if isinstance(v, str) else v) for k, v in headers] if headers else None
        if value is None and key is None:
            key = b""  # kafka-python refuses a record with neither; the value stays null
        while True:
            try:
                future = self.producer.send(topic, value=value, key=key, headers=encoded,
                                            timestamp_ms=timestamp_ms or None)
                break
            except kafka_errors.KafkaTimeoutError as exc:  # its buffer stayed full: wait on
                KAFKA_LOG.log(logging.WARNING, "%s %s", "producer", str(exc))
            except kafka_errors.KafkaError as exc:
                raise PublishError(f"{topic}: {exc}") from None
        self._unanswered.append((future, on_delivery))

    def poll(self, timeout: float) -> None:
        queue = self._unanswered
        if timeout > 0 and queue and not queue[0][0].is_done:
            with contextlib.suppress(kafka_errors.KafkaError):  # failed, or unanswered: see below
                queue[0][0].get(timeout)
        while queue and queue[0][0].is_done:
            future, on_delivery = queue.popleft()
            if future.failed():
                failure = f"{type(future.exception).__name__}: {future.exception}"
                if on_delivery is None:
                    self.failures.append(failure)
                else:
                    on_delivery(Delivery(("", 0), -1, failure))
            elif on_delivery is not None:
                meta = future.value
                on_delivery(Delivery((meta.topic, meta.partition), meta.offset))

    def flush(self, timeout: float) -> int:
        if self._producer is not None:
            with contextlib.suppress(kafka_errors.KafkaError):  # the unanswered are counted below
                self._producer.flush(timeout)
        self.poll(0)
        return len(self._unanswered)


def _kafka_call(what: str, call: Callable[[], Any]) -> Any:
    try:
        return call()
    except kafka_errors.NoBrokersAvailable:
        raise StreamLearnerError(f"{what}: no broker answered (--bootstrap-servers)") from None
    except kafka_errors.KafkaError as exc:
        raise StreamLearnerError(f"{what}: {exc}") from None


class KafkaPythonClients:
    """The service's clients, configured from its settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.kafka_log = route_kafka_log()

    def consumer(self, mode: str) -> KpConsumer:
        s = self.settings

        def make() -> Any:
            return kafka.KafkaConsumer(
                group_id=s.consumer_group(mode), client_id=f"stream-learner-{mode}",
                enable_auto_commit=False, auto_offset_reset=s.start_from, isolation_level="read_committed",
                max_poll_records=s.max_poll_records,
                fetch_max_wait_ms=100,  # a seek (rewind) waits for the fetch in flight
                session_timeout_ms=int(s.session_timeout * 1000),
                heartbeat_interval_ms=max(100, int(s.session_timeout * 1000) // 4),
                **_common(s))

        return KpConsumer(make, start_from=s.start_from, ends=mode == "learn")

    def reader(self) -> KpConsumer:
        def make() -> Any:
            return kafka.KafkaConsumer(group_id=None, client_id="stream-learner-reader",
                                       enable_auto_commit=False, allow_auto_create_topics=False,
                                       isolation_level="read_committed",
                                       **_common(self.settings))

        return KpConsumer(make, ends=True)

    def producer(self, client_id: str, max_batch: int = BROKER_DEFAULT_RECORD_BYTES, *,
                 failures_only: bool = False) -> KpProducer:
        def make() -> Any:
            return kafka.KafkaProducer(
                client_id=client_id, acks="all", enable_idempotence=True, linger_ms=LINGER_MS,
                batch_size=batch_bytes(DEFAULT_BATCH_BYTES, max_batch),
                max_request_size=MAX_REQUEST_BYTES, delivery_timeout_ms=DELIVERY_TIMEOUT_MS,
                partitioner=KeyPartitioner(), **_common(self.settings))

        return KpProducer(make, failures_only)

    def _admin(self) -> Any:
        return _kafka_call("Kafka admin", lambda: KafkaAdminClient(
            client_id="stream-learner-admin", request_timeout_ms=BROKER_WAIT_MS, **_common(self.settings)))

    def record_limit(self, topic: str) -> int:
        """As librdkafka's ``record_limit``."""
        try:
            admin = self._admin()
            try:
                found = admin.describe_configs([ConfigResource("TOPIC", topic)], config_filter="all")
                entry = found.get("topic", {}).get(topic, {}).get("max.message.bytes")
                if entry is None:  # no such topic yet: it is made with the broker's default
                    broker = str(min(b["broker_id"] for b in admin.describe_cluster()["brokers"]))
                    found = admin.describe_configs([ConfigResource("BROKER", broker)], config_filter="all")
                    entry = found["broker"][broker]["message.max.bytes"]
                return int(entry["value"])
            finally:
                admin.close()
        except (StreamLearnerError, kafka_errors.KafkaError, KeyError, ValueError, TypeError) as exc:
            log.warning("cannot read the record size limit of %s (%s): assuming Kafka's default, %d bytes",
                        topic, exc, BROKER_DEFAULT_RECORD_BYTES)
            return BROKER_DEFAULT_RECORD_BYTES

    def require_broker(self) -> None:
        """As librdkafka's ``require_broker``; what kafka-python logs meanwhile is not logged,
        its first line goes into the error."""
        s = self.settings
        held: list[str] = []
        self.kafka_log.held = held
        try:
            KafkaAdminClient(client_id="stream-learner-admin", **_common(s)).close()
        except kafka_errors.KafkaError as exc:
            raise StreamLearnerError(f"--bootstrap-servers {s.bootstrap_servers}: no broker answered "
                                     f"in {s.connect_timeout:g} s ({held[0] if held else exc})") from None
        finally:
            self.kafka_log.held = None
