"""The service's Kafka consumers, on both clients, on a real broker: group membership through
rebalances, and polls that hand over what has arrived."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from kafka import KafkaAdminClient

from consumers.clients.base import Consumer, Delivery
from consumers.clients.kafka_python import KpConsumer
from consumers.clients.librdkafka import RdConsumer
from stream_learner.config import Settings
from tests.integration.helpers import InThread, kafka_clients, make_settings, wait_for
from tools.localstack import KafkaBroker, RedisServer


class Member:
    """A group member polling with no wait, and refreshing its metadata when asked: every
    client call stays on its own thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.owned: frozenset[tuple[str, int]] = frozenset()
        self.refresh = threading.Event()

    def run(self, stop: threading.Event) -> None:
        consumer = kafka_clients(self.settings).consumer("serve")
        consumer.subscribe([self.settings.events_topic], on_assign=lambda _: None, on_revoke=lambda _: None)
        try:
            while not stop.is_set():
                # A zero timeout gives up on any rejoin still in flight, as a busy loop's poll may.
                consumer.poll(500, 0)
                if self.refresh.is_set():
                    refresh_metadata(consumer)
                    self.refresh.clear()
                self.owned = frozenset(consumer.assignment())
                stop.wait(0.002)
        finally:
            consumer.close()


def refresh_metadata(consumer: Consumer) -> None:
    """The cluster's metadata now, not when the client next refreshes it on its own (5 min)."""
    if isinstance(consumer, KpConsumer):
        consumer.consumer.topics()  # always asks the cluster
    else:
        assert isinstance(consumer, RdConsumer)
        consumer.consumer.list_topics(timeout=10)


def test_a_group_leader_follows_new_partitions_whatever_its_poll_timeout(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
    topic: Callable[..., str], kafka_client: str,
) -> None:
    # The leader of a rebalance caused by new partitions gets its share, even when a poll gives
    # up while its SyncGroup is in flight.
    settings = make_settings(kafka, redis_server, unique, events_topic=topic("grown", partitions=2),
                             kafka_client=kafka_client)
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
    topic: Callable[..., str], kafka_client: str,
) -> None:
    # librdkafka's consume() waits for a whole batch or its timeout, and kafka-python's poll can
    # sleep on a fetch response it has buffered already; a learner at a trickle of events must
    # do neither.
    settings = make_settings(kafka, redis_server, unique, events_topic=topic("steady"),
                             kafka_client=kafka_client)
    clients = kafka_clients(settings)
    producer = clients.producer("trickle")
    failed: list[Delivery] = []
    producing = threading.Event()
    producing.set()
    sent = 0

    def delivered(delivery: Delivery) -> None:
        if delivery.error is not None:
            failed.append(delivery)

    def trickle() -> None:  # ~200 records/s for 3 s, far from a batch of 500 in any poll
        nonlocal sent
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            for _ in range(2):
                producer.send(settings.events_topic, b"x" * 200, on_delivery=delivered)
            sent += 2
            producer.poll(0)
            time.sleep(0.01)
        assert producer.flush(10) == 0
        producing.clear()

    consumer = clients.consumer("serve")
    partition = (settings.events_topic, 0)
    consumer.assign({partition: consumer.end_offsets(settings.events_topic, "--events-topic")[0]})
    consumer.poll(500, 1.0)  # the first fetch: the feeder starts once the position is set
    feeder = threading.Thread(target=trickle)
    feeder.start()
    slow, polls, received = [], 0, 0
    try:
        while producing.is_set() or received < sent:
            started = time.monotonic()
            batch = consumer.poll(500, 3.0)
            took = time.monotonic() - started
            polls += 1
            if producing.is_set() and took > 1.0:
                slow.append(round(took, 2))
            received += len(batch.records)
    finally:
        feeder.join()
        consumer.close()
    assert received == sent and polls > 50 and not failed
    assert slow == [], f"{len(slow)} of {polls} polls waited with records arriving: {slow}"
