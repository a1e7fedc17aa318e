"""Session-wide real Kafka broker and Redis server on free loopback ports.

A server that cannot start fails the run with its log tail; integration tests are never skipped.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from kafka import KafkaAdminClient
from kafka.admin import NewTopic

from tools.localstack import KafkaBroker, RedisServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def unique(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Names no other test uses: ``unique("events")`` -> ``test_x-events-1a2b3c4d``."""
    stem = re.sub(r"[^A-Za-z0-9._-]", "-", request.node.name)[:60]

    def make(kind: str) -> str:
        return f"{stem}-{kind}-{uuid.uuid4().hex[:8]}"

    return make


def create_topic(bootstrap: str, name: str, partitions: int = 1, timeout: float = 30.0) -> None:
    """Create a topic and wait until the broker reports all its partitions."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(name, partitions, 1)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            described = admin.describe_topics([name])
            if described and len(described[0].get("partitions", [])) == partitions:
                return
            time.sleep(0.05)
        raise TimeoutError(f"topic {name} has not {partitions} partitions after {timeout} s")
    finally:
        admin.close()


@pytest.fixture
def topic(kafka: KafkaBroker, unique: Callable[[str], str]) -> Callable[..., str]:
    """Factory: ``topic("events", partitions=3)`` creates a fresh topic and returns its name."""

    def make(kind: str = "topic", partitions: int = 1) -> str:
        name = unique(kind)
        create_topic(kafka.bootstrap, name, partitions)
        return name

    return make
