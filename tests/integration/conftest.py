"""Session-wide real Kafka broker and Redis server on free loopback ports.

A server that cannot start fails the run with its log tail; integration tests are never skipped.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator

import pytest

from stream_learner.config import KAFKA_CLIENTS
from tools.localstack import KafkaBroker, RedisServer, create_topics

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


@pytest.fixture(params=KAFKA_CLIENTS)
def kafka_client(request: pytest.FixtureRequest) -> str:
    """Each Kafka client the service runs on (``--kafka-client``): a test of a guarantee takes
    this fixture and runs on both; the others run on the default."""
    return str(request.param)


@pytest.fixture
def unique(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Names no other test uses: ``unique("events")`` -> ``test_x-events-1a2b3c4d``."""
    stem = re.sub(r"[^A-Za-z0-9._-]", "-", request.node.name)[:60]

    def make(kind: str) -> str:
        return f"{stem}-{kind}-{uuid.uuid4().hex[:8]}"

    return make


def create_topic(bootstrap: str, name: str, partitions: int = 1) -> None:
    create_topics(bootstrap, [name], partitions)


@pytest.fixture
def topic(kafka: KafkaBroker, unique: Callable[[str], str]) -> Callable[..., str]:
    """Factory: ``topic("events", partitions=3)`` creates a fresh topic and returns its name."""

    def make(kind: str = "topic", partitions: int = 1) -> str:
        name = unique(kind)
        create_topic(kafka.bootstrap, name, partitions)
        return name

    return make
