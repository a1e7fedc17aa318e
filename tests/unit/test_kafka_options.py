"""Kafka auth and TLS settings reach both clients' consumers and producers as they are."""

from __future__ import annotations

from typing import Any

import pytest

from consumers.clients import kafka_python
from consumers.clients.librdkafka import make_consumer, make_producer, security_options
from stream_learner.config import Settings
from stream_learner.errors import StreamLearnerError


def test_plaintext_by_default() -> None:
    assert security_options(Settings()) == {"security.protocol": "PLAINTEXT"}


def test_sasl_ssl_settings_pass_through() -> None:
    settings = Settings.load(env={
        "STREAM_LEARNER_SECURITY_PROTOCOL": "SASL_SSL", "STREAM_LEARNER_SASL_MECHANISM": "SCRAM-SHA-512",
        "STREAM_LEARNER_SASL_USERNAME": "svc", "STREAM_LEARNER_SASL_PASSWORD": "pw",
        "STREAM_LEARNER_SSL_CAFILE": "/etc/ssl/ca.pem"})
    assert "pw" not in str(settings.redacted().values())
    assert security_options(settings) == {
        "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "svc",
        "sasl.password": "pw", "ssl.ca.location": "/etc/ssl/ca.pem"}


@pytest.mark.parametrize("make", [make_producer, lambda s: make_consumer(s, "learn")],
                         ids=["producer", "consumer"])
def test_the_clients_take_the_settings_without_connecting_and_name_a_bad_one(make: Any) -> None:
    env = {"STREAM_LEARNER_BOOTSTRAP_SERVERS": "127.0.0.1:1",
           "STREAM_LEARNER_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
           "STREAM_LEARNER_SASL_USERNAME": "svc", "STREAM_LEARNER_SASL_PASSWORD": "pw"}
    make(Settings.load(env={**env, "STREAM_LEARNER_SASL_MECHANISM": "PLAIN"}))  # no broker on port 1
    with pytest.raises(StreamLearnerError, match="SASL mechanism: BOGUS"):
        make(Settings.load(env={**env, "STREAM_LEARNER_SASL_MECHANISM": "BOGUS"}))


def test_kafka_python_takes_the_same_settings_in_its_own_names() -> None:
    settings = Settings.load(env={
        "STREAM_LEARNER_SECURITY_PROTOCOL": "SASL_SSL", "STREAM_LEARNER_SASL_MECHANISM": "SCRAM-SHA-512",
        "STREAM_LEARNER_SASL_USERNAME": "svc", "STREAM_LEARNER_SASL_PASSWORD": "pw",
        "STREAM_LEARNER_SSL_CAFILE": "/etc/ssl/ca.pem"})
    assert kafka_python.security_options(Settings()) == {"security_protocol": "PLAINTEXT"}
    assert kafka_python.security_options(settings) == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "svc",
        "sasl_plain_password": "pw", "ssl_cafile": "/etc/ssl/ca.pem"}


def test_kafka_python_clients_are_made_at_first_use_so_making_them_connects_nowhere() -> None:
    clients = kafka_python.KafkaPythonClients(Settings(bootstrap_servers="127.0.0.1:1"))
    consumer, producer, reader = clients.consumer("learn"), clients.producer("p"), clients.reader()
    assert consumer.ends and reader.ends and not clients.consumer("serve").ends
    assert producer.flush(0) == 0  # nothing sent: nothing made, nothing waited for
    consumer.close()
    reader.close()
