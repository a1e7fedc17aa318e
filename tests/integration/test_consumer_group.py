"""The service's Kafka consumers on a real broker: group membership through rebalances, and
polls that hand over what has arrived."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import confluent_kafka as rdkafka
from kafka import KafkaAdminClient

from consumers.clients.librdkafka import make_consumer, make_producer, poll
from stream_learner.config import Settings
from tests.integration.helpers import InThread, make_settings, wait_for
from tools.localstack import KafkaBroker, RedisServer


class Member:
    """A group member polling with no wait, and refreshing its metadata when asked: every
    client call stays on its own thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.owned: frozenset[tuple[str, int]] = frozenset()
        self.refresh = threading.Event()

    def run(self, stop: threading.Event) -> None:
        consumer = make_consumer(self.settings, "serve")
        consumer.subscribe([self.settings.events_topic])
        try:
            while not stop.is_set():
                # A zero timeout gives up on any rejoin still in flight, as a busy loop's poll may.
                poll(consumer, 500, 0)
                if self.refresh.is_set():
                    # metadata now, not at topic.metadata.refresh.interval.ms
                    consumer.list_topics(timeout=10)
                    self.refresh.clear()
                self.owned = frozenset((tp.topic, tp.partition) for tp in consumer.assignment())
                stop.wait(0.002)
        finally:
            consumer.close()


def test_a_group_leader_follows_new_partitions_whatever_its_poll_timeout(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
    topic: Callable[..., str],
) -> None:
    # The leader of a rebalance caused by new partitions gets its share, even when a poll gives
    # up while its SyncGroup is in flight.
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


def test_a_poll_hands_over_what_has_arrived_without_waiting_for_a_full_batch(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
    topic: Callable[..., str],
) -> None:
    # librdkafka's consume() waits for a whole batch or its timeout; a learner at a trickle of
    # events must not, nor sleep on a fetch response it has buffered already.
    settings = make_settings(kafka, redis_server, unique, events_topic=topic("steady"))
    producer = make_producer(settings)
    producing = threading.Event()
    producing.set()
    sent = 0

    def trickle() -> None:  # ~200 records/s for 3 s, far from a batch of 500 in any poll
        nonlocal sent
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            for _ in range(2):
                producer.produce(settings.events_topic, b"x" * 200)
            sent += 2
            producer.poll(0)
            time.sleep(0.01)
        producer.flush(10)
        producing.clear()

    consumer = make_consumer(settings, "serve")
    consumer.assign([rdkafka.TopicPartition(settings.events_topic, 0, rdkafka.OFFSET_END)])
    poll(consumer, 500, 1.0)  # the first fetch: the feeder starts once the position is set
    feeder = threading.Thread(target=trickle)
    feeder.start()
    slow, polls, received = [], 0, 0
    try:
        while producing.is_set() or received < sent:
            started = time.monotonic()
            batch = poll(consumer, 500, 3.0)
            took = time.monotonic() - started
            polls += 1
            if producing.is_set() and took > 1.0:
                slow.append(round(took, 2))
            received += len(batch.records)
    finally:
        feeder.join()
        consumer.close()
    assert received == sent and polls > 50
    assert slow == [], f"{len(slow)} of {polls} polls waited with records arriving: {slow}"
