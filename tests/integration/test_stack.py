"""The real stack itself: kafka-python against our Kafka 4.x broker, redis-py against Redis."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from tests.integration.conftest import create_topic
from tools.localstack import KafkaBroker, RedisServer


def consume_until(consumer: KafkaConsumer, count: int, timeout: float = 60.0) -> list[tuple[int, int, bytes]]:
    """Poll until ``count`` records arrived; returns (partition, offset, value)."""
    seen: list[tuple[int, int, bytes]] = []
    deadline = time.monotonic() + timeout
    while len(seen) < count and time.monotonic() < deadline:
        for tp, records in consumer.poll(timeout_ms=500).items():
            seen.extend((tp.partition, r.offset, r.value) for r in records)
    assert len(seen) >= count, f"only {len(seen)} of {count} records before the deadline"
    return seen


def test_10k_messages_through_a_group_with_manual_commits(
    kafka: KafkaBroker, topic: Callable[..., str], unique: Callable[[str], str]
) -> None:
    name = topic("roundtrip", partitions=3)
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all", linger_ms=5)
    for i in range(10_000):
        producer.send(name, key=str(i % 97).encode(), value=f"m{i}".encode())
    producer.flush()
    producer.close()

    consumer = KafkaConsumer(
        name, bootstrap_servers=kafka.bootstrap, group_id=unique("group"),
        enable_auto_commit=False, auto_offset_reset="earliest",
    )
    seen = consume_until(consumer, 10_000)
    consumer.commit()
    assert sorted(v for _, _, v in seen) == sorted(f"m{i}".encode() for i in range(10_000))
    assert {p for p, _, _ in seen} == {0, 1, 2}
    committed = {p: consumer.committed(TopicPartition(name, p)) for p in range(3)}
    assert sum(o or 0 for o in committed.values()) == 10_000
    consumer.close()


def test_restarted_consumer_resumes_at_the_committed_offset(
    kafka: KafkaBroker, topic: Callable[..., str], unique: Callable[[str], str]
) -> None:
    name, group = topic("resume"), unique("group")
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    for i in range(100):
        producer.send(name, value=str(i).encode())
    producer.flush()
    producer.close()

    tp = TopicPartition(name, 0)
    first = KafkaConsumer(bootstrap_servers=kafka.bootstrap, group_id=group,
                          enable_auto_commit=False, auto_offset_reset="earliest")
    first.assign([tp])
    seen = consume_until(first, 40)
    first.commit({tp: _offset_meta(37)})  # commit in the middle of what was read
    first.close()
    assert len(seen) >= 40

    second = KafkaConsumer(bootstrap_servers=kafka.bootstrap, group_id=group,
                           enable_auto_commit=False, auto_offset_reset="earliest")
    second.assign([tp])
    rest = consume_until(second, 63)
    assert [o for _, o, _ in rest] == list(range(37, 100))

    second.seek(tp, 5)
    again = consume_until(second, 1)
    assert again[0][1:] == (5, b"5")
    second.close()


def _offset_meta(offset: int) -> object:
    from kafka.structs import OffsetAndMetadata

    return OffsetAndMetadata(offset, "", -1)


def test_admin_creates_topics_with_partitions(kafka: KafkaBroker, unique: Callable[[str], str]) -> None:
    name = unique("admin")
    create_topic(kafka.bootstrap, name, partitions=4)
    consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap)
    assert consumer.partitions_for_topic(name) == {0, 1, 2, 3}
    consumer.close()


def test_redis_large_value_and_transaction(redis_server: RedisServer, unique: Callable[[str], str]) -> None:
    client = redis.Redis.from_url(redis_server.url)
    key = unique("blob")
    blob = os.urandom(5 * 1024 * 1024)
    assert client.set(key, blob)
    assert client.get(key) == blob

    pipe = client.pipeline(transaction=True)
    pipe.set(f"{key}:a", b"1")
    pipe.incr(f"{key}:n")
    pipe.incr(f"{key}:n")
    pipe.get(f"{key}:a")
    assert pipe.execute() == [True, 1, 2, b"1"]
    client.close()


def test_broker_sigkill_and_restart_loses_no_acknowledged_message(tmp_path: Path) -> None:
    broker = KafkaBroker(tmp_path / "kafka")
    broker.start()
    try:
        create_topic(broker.bootstrap, "durable", partitions=2)
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all",
                                 retries=1_000, retry_backoff_ms=200, request_timeout_ms=5_000,
                                 max_block_ms=60_000)
        acked = [producer.send("durable", value=f"before-{i}".encode()) for i in range(500)]
        producer.flush()
        assert all(f.succeeded() for f in acked)

        consumer = KafkaConsumer("durable", bootstrap_servers=broker.bootstrap, group_id="g",
                                 enable_auto_commit=False, auto_offset_reset="earliest",
                                 reconnect_backoff_max_ms=1_000)
        consume_until(consumer, 500)
        consumer.commit()

        broker.kill()
        # The same clients keep going once the broker is back on the same data directory.
        pending = [producer.send("durable", value=f"after-{i}".encode()) for i in range(100)]
        broker.start()
        producer.flush(timeout=60)
        assert all(f.succeeded() for f in pending)
        after = consume_until(consumer, 100, timeout=90)
        assert sorted(v for _, _, v in after) == sorted(f"after-{i}".encode() for i in range(100))
        consumer.close()
        producer.close()

        fresh = KafkaConsumer("durable", bootstrap_servers=broker.bootstrap,
                              auto_offset_reset="earliest", group_id=None)
        everything = consume_until(fresh, 600)
        values = {v for _, _, v in everything}
        assert {f"before-{i}".encode() for i in range(500)} <= values
        assert len(everything) == 600
        fresh.close()
    finally:
        broker.stop()
