"""Shared by the service's integration tests: run components, feed topics, read them back."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from consumers.clients.base import Clients
from stream_learner import cli
from stream_learner.checkpoint import Checkpoint, CheckpointMeta, open_record, read_meta
from stream_learner.config import Settings
from stream_learner.state.redis import RedisStore
from tools import service
from tools.events import Row, dataset_rows
from tools.localstack import KafkaBroker, RedisServer
from tools.service import service_env

KEY = "integration-test-key"


def kafka_clients(settings: Settings) -> Clients:
    """The service's Kafka clients of ``settings.kafka_client``, as the CLI makes them."""
    return cli.kafka_clients(settings)


def wait_for(what: str, condition: Callable[[], Any], timeout: float = 60.0, every: float = 0.05) -> Any:
    """Poll ``condition`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def make_settings(kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
                  **overrides: Any) -> Settings:
    base = Settings(
        bootstrap_servers=kafka.bootstrap, redis_url=redis_server.url, model=unique("model"),
        events_topic=unique("events"), predictions_topic=unique("predictions"),
        dead_letter_topic=unique("dlq"), key_prefix=unique("sl"), hmac_key=KEY,
        checkpoint_interval=0.5,
    )
    return replace(base, **overrides)


def phishing() -> list[Row]:
    """Phishing as the service sees it: through a JSON round trip."""
    return dataset_rows("Phishing")


def produce(bootstrap: str, topic: str, messages: Iterable[tuple[str | None, bytes]]) -> int:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                             max_request_size=16 * 1024 * 1024)
    futures = [producer.send(topic, key=k.encode() if k else None, value=v) for k, v in messages]
    producer.flush()
    producer.close()
    assert all(f.succeeded() for f in futures)
    return len(futures)


@dataclass
class Message:
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]

    def json(self) -> Any:
        return json.loads(self.value)


def read_topic(bootstrap: str, topic: str, count: int, timeout: float = 60.0) -> list[Message]:
    """Read a topic from the beginning (no group) until ``count`` messages arrived."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             fetch_max_bytes=64 * 1024 * 1024,
                             max_partition_fetch_bytes=16 * 1024 * 1024)
    partitions = wait_for(f"partitions of {topic}", lambda: consumer.partitions_for_topic(topic))
    consumer.assign([TopicPartition(topic, p) for p in partitions])
    consumer.seek_to_beginning()
    out: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(out) < count and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=200).values():
            out.extend(Message(r.partition, r.offset, r.key, r.value, dict(r.headers)) for r in records)
    consumer.close()
    assert len(out) >= count, f"{topic}: {len(out)} of {count} messages before the deadline"
    return out


class Runnable(Protocol):
    def run(self, stop: threading.Event) -> None: ...


class InThread:
    """Run a learner or predictor in a thread of the test process; ``stop()`` ends it cleanly."""

    def __init__(self, component: Runnable) -> None:
        self.component = component
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.component.run(self.stop_event)
        except BaseException as exc:
            self.error = exc

    def check(self) -> None:
        """Raise what ended the component early, so a wait fails with the cause."""
        if self.error is not None and not self.thread.is_alive():
            raise AssertionError(f"{type(self.component).__name__} died") from self.error

    def stop(self, timeout: float = 60.0) -> None:
        self.stop_event.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "component did not stop"
        if self.error:
            raise self.error


def spawn(command: str, settings: Settings, *extra: str, omit: tuple[str, ...] = ()) -> subprocess.Popen[str]:
    """``stream-learner <command>`` as a real process, configured through its environment, its
    output (stderr too) on a text pipe."""
    return service.spawn(command, service_env(settings, omit), *extra, text=True)


def store_for(settings: Settings) -> RedisStore:
    return RedisStore.for_settings(settings)


def latest_meta(settings: Settings) -> CheckpointMeta | None:
    store = store_for(settings)
    try:
        version = store.latest_version(settings.model)
        return read_meta(store.load(settings.model, version)) if version else None
    finally:
        store.close()


def wait_learned(settings: Settings, learned: int, timeout: float = 60.0) -> CheckpointMeta:
    """Until a checkpoint holds at least ``learned`` labelled events."""
    def check() -> CheckpointMeta | None:
        meta = latest_meta(settings)
        return meta if meta and meta.learned >= learned else None

    meta: CheckpointMeta = wait_for(f"a checkpoint with {learned} learned", check, timeout, every=0.1)
    return meta


def learn_all(settings: Settings, count: int, timeout: float = 120.0) -> CheckpointMeta:
    """Run a learner in a thread until a checkpoint covers ``count`` messages; then stop it."""
    from consumers.learner import Learner

    learner = InThread(Learner(settings, store_for(settings), kafka_clients(settings)))

    def covered() -> CheckpointMeta | None:
        learner.check()
        meta = latest_meta(settings)
        return meta if meta is not None and sum(meta.offsets.values()) >= count else None

    meta: CheckpointMeta = wait_for(f"a checkpoint covering {count} messages", covered, timeout)
    learner.stop()
    return meta


def load_checkpoint(settings: Settings, version: int = 0) -> Checkpoint:
    store = store_for(settings)
    try:
        return open_record(store.load(settings.model, version), {settings.hmac_key_id: KEY.encode()},
                           packages=settings.trusted_packages())
    finally:
        store.close()


def read_all(bootstrap: str, topic: str, timeout: float = 60.0) -> list[Message]:
    """Everything in a topic right now: read from the beginning to the end offsets."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    partitions = wait_for(f"partitions of {topic}", lambda: consumer.partitions_for_topic(topic))
    tps = [TopicPartition(topic, p) for p in partitions]
    ends = consumer.end_offsets(tps)
    consumer.assign(tps)
    consumer.seek_to_beginning()
    out: list[Message] = []
    deadline = time.monotonic() + timeout
    while any(consumer.position(tp) < ends[tp] for tp in tps):
        assert time.monotonic() < deadline, f"{topic}: not read to the end in {timeout} s"
        for records in consumer.poll(timeout_ms=200).values():
            out.extend(Message(r.partition, r.offset, r.key, r.value, dict(r.headers)) for r in records)
    consumer.close()
    return out
