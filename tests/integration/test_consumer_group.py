"""The service's Kafka consumers on a real broker: group membership through rebalances, and
polls that hand over what was fetched."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from kafka import KafkaAdminClient, TopicPartition

from consumers.kafka_io import make_consumer, make_producer, produce
from stream_learner.config import Settings
from tests.integration.helpers import InThread, make_settings, wait_for
from tools.localstack import KafkaBroker, RedisServer


class Member:
    """A group member polling with no wait, and refreshing its metadata when asked: every
    client call stays on its own thread, as kafka-python requires."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.owned: frozenset[TopicPartition] = frozenset()
        self.refresh = threading.Event()

    def run(self, stop: threading.Event) -> None:
        consumer = make_consumer(self.settings, "serve")
        consumer.subscribe([self.settings.events_topic])
        try:
            while not stop.is_set():
                # A zero timeout gives up on any rejoin still in flight, as a busy loop's poll may.
                consumer.poll(timeout_ms=0)
                if self.refresh.is_set():
                    consumer.topics()  # fetch metadata now, not at metadata_max_age_ms
                    self.refresh.clear()
                self.owned = frozenset(consumer.assignment())
                stop.wait(0.002)
        finally:
            consumer.close(autocommit=False)


def test_a_group_leader_follows_new_partitions_whatever_its_poll_timeout(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
    topic: Callable[..., str],
) -> None:
    # kafka-python 3.0.12 alone leaves the leader of a rebalance caused by new partitions with no
    # partitions at all when a poll gives up while its SyncGroup is in flight.
    settings = make_settings(kafka, redis_server, unique, events_topic=topic("grown", partitions=2))
    members = [Member(settings), Member(settings)]
    threads = [InThread(m) for m in members]

    def spread(count: int) -> bool:
        owned = [m.owned for m in members]
        return all(len(o) == count for o in owned) and len(owned[0] | owned[1]) == 2 * count

    try:
        wait_for("each member to own one partition", lambda: spread(1), timeout=60)
        admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap)
        try:
            admin.create_partitions({settings.events_topic: 4})
        finally:
            admin.close()
        for m in members:
            m.refresh.set()
        wait_for("each member to own two of the four partitions", lambda: spread(2), timeout=60)
    finally:
        for t in threads:
            t.stop()


def test_poll_hands_over_fetched_records_instead_of_sleeping_on_them(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
    topic: Callable[..., str],
) -> None:
    # kafka-python 3.0.12 can take a poll for idle while a fetch response it has just buffered
    # waits, and sleep retry_backoff_ms on it. A backoff of 3 s makes any such sleep plain.
    settings = make_settings(kafka, redis_server, unique, events_topic=topic("steady"))
    producer = make_producer(settings)
    producing = threading.Event()
    producing.set()
    sent = 0

    def steady_stream() -> None:  # ~10,000 records/s for 5 s, as a live source would send them
        nonlocal sent
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            for _ in range(10):
                produce(producer, settings.events_topic, b"x" * 200, None, lambda _e, _m: None)
            sent += 10
            producer.poll(0)
            time.sleep(0.001)
        producer.flush(10)
        producing.clear()

    consumer = make_consumer(settings, "serve")
    consumer.config["retry_backoff_ms"] = 3000
    consumer.assign([TopicPartition(settings.events_topic, 0)])
    consumer.seek_to_end()
    consumer.position(TopicPartition(settings.events_topic, 0))
    feeder = threading.Thread(target=steady_stream)
    feeder.start()
    stalls, polls, received = [], 0, 0
    try:
        while producing.is_set() or received < sent:
            started = time.monotonic()
            batch = consumer.poll(timeout_ms=3000)
            took = time.monotonic() - started
            polls += 1
            if producing.is_set() and took > 1.0:
                stalls.append(round(took, 2))
            for records in batch.values():
                received += len(records)
                end = time.perf_counter() + 50e-6 * len(records)  # a learner's work per record
                while time.perf_counter() < end:
                    pass
    finally:
        feeder.join()
        consumer.close(autocommit=False)
    assert received == sent and polls > 100
    assert stalls == [], f"{len(stalls)} of {polls} polls slept with records flowing: {stalls}"
