"""Redis ACL users and secrets: the learner needs only its own keys, a predictor only reads,
and no password or signing key ever reaches a log line or ``models show``."""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import replace

import pytest
import redis

from consumers.predictor import Predictor
from stream_learner.errors import CheckpointError
from stream_learner.state.redis import RedisStore
from tests.integration.helpers import (
    KEY,
    InThread,
    kafka_clients,
    make_settings,
    phishing,
    produce,
    read_topic,
    spawn,
    wait_for,
    wait_learned,
)
from tools.events import event_bytes
from tools.localstack import KafkaBroker, RedisServer


def test_least_privilege_redis_users_and_no_secrets_in_output(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
    topic: Callable[..., str],
) -> None:
    prefix = unique("acl")
    admin = redis.Redis.from_url(redis_server.url)
    keys, channels = f"~{{{prefix}:*", f"&{{{prefix}:*"
    learner_pw, reader_pw = "learner-" + unique("pw"), "reader-" + unique("pw")
    admin.acl_setuser("sl-learner", enabled=True, passwords=[f"+{learner_pw}"], keys=[keys[1:]],
                      channels=[channels[1:]], commands=["-@all", "+@read", "+@write", "+@scripting",
                                                         "+publish", "+ping"])
    admin.acl_setuser("sl-reader", enabled=True, passwords=[f"+{reader_pw}"], keys=[keys[1:]],
                      commands=["-@all", "+get", "+hmget", "+hstrlen", "+zrange", "+ping"])
    host = redis_server.url.removeprefix("redis://")
    as_learner = f"redis://sl-learner:{learner_pw}@{host}"
    as_reader = f"redis://sl-reader:{reader_pw}@{host}"

    rows = phishing()
    settings = make_settings(kafka, redis_server, unique, events_topic=topic("events"), key_prefix=prefix,
                             redis_url=as_learner)
    produce(kafka.bootstrap, settings.events_topic, event_bytes(rows[:500]))
    learner = spawn("learn", settings)
    try:
        wait_learned(settings, 500)
        serve = replace(settings, redis_url=as_reader, events_topic=topic("live"),
                        predictions_topic=unique("served"))
        predictor = Predictor(serve, RedisStore(as_reader, prefix), kafka_clients(serve))
        serving = InThread(predictor)
        produce(kafka.bootstrap, serve.events_topic, event_bytes(rows[:100]))
        assert len(read_topic(kafka.bootstrap, serve.predictions_topic, 100)) == 100
        produce(kafka.bootstrap, settings.events_topic, event_bytes(rows[500:], start=500))
        newest = wait_learned(settings, len(rows))
        wait_for("the read-only predictor to reload", lambda: predictor.version == newest.version)
        serving.stop()
    finally:
        learner.send_signal(signal.SIGTERM)
        out, _ = learner.communicate(timeout=60)
    assert learner.returncode == 0, out[-2000:]

    reader = RedisStore(as_reader, prefix)
    with pytest.raises(CheckpointError, match="Redis refused taking the writer lease: NoPermissionError"):
        reader.acquire(settings.model, ttl=10)
    outsider = RedisStore(as_learner, unique("not-mine"))
    with pytest.raises(CheckpointError, match="NoPermissionError"):
        outsider.latest_version(settings.model)

    shown = spawn("models", settings, "show")
    show_out, _ = shown.communicate(timeout=60)
    assert shown.returncode == 0 and '"signature": "verified"' in show_out
    for secret in (learner_pw, reader_pw, KEY):
        assert secret not in out, "a secret reached the learner's log"
        assert secret not in show_out, "a secret reached models show"
    assert "sl-learner:***@" in out
