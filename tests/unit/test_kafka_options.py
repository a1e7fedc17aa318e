"""Kafka auth and TLS settings reach librdkafka's clients (consumers and producer) as they are."""

from __future__ import annotations

from typing import Any

import pytest

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
