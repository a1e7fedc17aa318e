"""Kafka auth and TLS settings reach kafka-python's and librdkafka's clients as they are."""

from __future__ import annotations

import pytest

from consumers.kafka_io import make_producer, security_options
from stream_learner.config import Settings
from stream_learner.errors import StreamLearnerError


def test_plaintext_by_default() -> None:
    assert security_options(Settings()) == {"security_protocol": "PLAINTEXT"}
    assert security_options(Settings(), "librdkafka") == {"security.protocol": "PLAINTEXT"}


def test_sasl_ssl_settings_pass_through() -> None:
    settings = Settings.load(env={
        "STREAM_LEARNER_SECURITY_PROTOCOL": "SASL_SSL", "STREAM_LEARNER_SASL_MECHANISM": "SCRAM-SHA-512",
        "STREAM_LEARNER_SASL_USERNAME": "svc", "STREAM_LEARNER_SASL_PASSWORD": "pw",
        "STREAM_LEARNER_SSL_CAFILE": "/etc/ssl/ca.pem"})
    assert security_options(settings) == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "svc",
        "sasl_plain_password": "pw", "ssl_cafile": "/etc/ssl/ca.pem"}
    assert "pw" not in str(settings.redacted().values())
    assert security_options(settings, "librdkafka") == {
        "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "svc",
        "sasl.password": "pw", "ssl.ca.location": "/etc/ssl/ca.pem"}


def test_the_producer_takes_the_settings_without_connecting_and_names_a_bad_one() -> None:
    env = {"STREAM_LEARNER_BOOTSTRAP_SERVERS": "127.0.0.1:1",
           "STREAM_LEARNER_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
           "STREAM_LEARNER_SASL_USERNAME": "svc", "STREAM_LEARNER_SASL_PASSWORD": "pw"}
    make_producer(Settings.load(env={**env, "STREAM_LEARNER_SASL_MECHANISM": "PLAIN"}))  # no broker on port 1
    with pytest.raises(StreamLearnerError, match="SASL mechanism: BOGUS"):
        make_producer(Settings.load(env={**env, "STREAM_LEARNER_SASL_MECHANISM": "BOGUS"}))
