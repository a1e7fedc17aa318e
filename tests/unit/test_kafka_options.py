"""Kafka auth and TLS settings reach kafka-python's clients as they are."""

from __future__ import annotations

from consumers.kafka_io import security_options
from stream_learner.config import Settings


def test_plaintext_by_default() -> None:
    assert security_options(Settings()) == {"security_protocol": "PLAINTEXT"}


def test_sasl_ssl_settings_pass_through() -> None:
    settings = Settings.load(env={
        "STREAM_LEARNER_SECURITY_PROTOCOL": "SASL_SSL", "STREAM_LEARNER_SASL_MECHANISM": "SCRAM-SHA-512",
        "STREAM_LEARNER_SASL_USERNAME": "svc", "STREAM_LEARNER_SASL_PASSWORD": "pw",
        "STREAM_LEARNER_SSL_CAFILE": "/etc/ssl/ca.pem"})
    assert security_options(settings) == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "svc",
        "sasl_plain_password": "pw", "ssl_cafile": "/etc/ssl/ca.pem"}
    assert "pw" not in str(settings.redacted().values())
