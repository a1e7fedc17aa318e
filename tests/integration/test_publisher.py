"""The Publisher on both real Kafka clients: every send acknowledged at a flush, or a
``PublishError``, whether sends are tracked one by one (a learner's) or the producer reports
failures only (a predictor's)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from consumers.kafka_io import Publisher
from stream_learner.errors import PublishError
from tests.integration.helpers import kafka_clients, make_settings, read_all
from tools.localstack import KafkaBroker, RedisServer, create_topics


@pytest.mark.parametrize("failures_only", [False, True])
def test_a_flush_answers_for_every_send_and_raises_for_one_the_broker_refused(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
    topic: Callable[..., str], kafka_client: str, failures_only: bool,
) -> None:
    settings = make_settings(kafka, redis_server, unique, kafka_client=kafka_client)
    small, sink = unique("small"), topic("sink")
    create_topics(kafka.bootstrap, [small], configs={"max.message.bytes": "1000"})
    producer = kafka_clients(settings).producer("test", failures_only=failures_only)
    publisher = Publisher(producer, settings)
    assert publisher.tracked is not failures_only
    for i in range(100):
        publisher.send(sink, b"%d" % i)
    publisher.flush()
    assert producer.failures == [] and publisher.failures == []
    publisher.send(small, b"v" * 5000)  # over the topic's limit: the broker refuses it
    with pytest.raises(PublishError, match="1 sends were not acknowledged"):
        publisher.flush()
    assert sorted(m.value for m in read_all(kafka.bootstrap, sink)) == sorted(b"%d" % i for i in range(100))
