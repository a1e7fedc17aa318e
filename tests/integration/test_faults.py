"""Faults of the servers: Redis and the Kafka broker are SIGKILLed under a running service."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from consumers.learner import Learner
from consumers.predictor import Predictor
from stream_learner.engine import id_hash
from tests.integration.conftest import create_topic
from tests.integration.helpers import (
    InThread,
    kafka_clients,
    load_checkpoint,
    make_settings,
    phishing,
    produce,
    read_all,
    read_topic,
    store_for,
    wait_for,
    wait_learned,
)
from tools.events import event_bytes
from tools.localstack import KafkaBroker, RedisServer


def failed_checkpoints(learner: Learner) -> int:
    return learner.checkpoints.failures if learner.checkpoints is not None else 0


def digest(count: int, prefix: str = "e") -> int:
    return sum(id_hash(f"{prefix}-{i}") for i in range(count)) % 2**64


def test_redis_outage_learning_goes_on_and_checkpoints_resume(
    kafka: KafkaBroker, unique: Callable[[str], str], topic: Callable[..., str], tmp_path: Path,
) -> None:
    redis = RedisServer(tmp_path / "redis", fsync_always=True)
    redis.start()
    try:
        rows = phishing()
        learn = make_settings(kafka, redis, unique, events_topic=topic("events"), checkpoint_interval=0.2,
                              lease_ttl=3.0)
        serve = replace(learn, events_topic=topic("live"), predictions_topic=unique("served"))
        messages = event_bytes(rows)
        produce(kafka.bootstrap, learn.events_topic, messages[:400])
        learner = Learner(learn, store_for(learn), kafka_clients(learn))
        learning = InThread(learner)
        acknowledged = wait_learned(learn, 400)
        predictor = Predictor(serve, store_for(serve), kafka_clients(serve))
        serving = InThread(predictor)
        wait_for("the predictor to load a model", lambda: predictor.engine is not None)

        redis.kill()
        # Learning and serving go on without the store.
        produce(kafka.bootstrap, learn.events_topic, messages[400:900])
        produce(kafka.bootstrap, serve.events_topic, messages[:300])
        wait_for("the learner to learn without Redis", lambda: learner.state and learner.state.learned == 900)
        read_topic(kafka.bootstrap, learn.predictions_topic, 900)
        served = read_topic(kafka.bootstrap, serve.predictions_topic, 300)
        assert {m.json()["model_version"] for m in served} == {predictor.version}
        wait_for("a failed checkpoint attempt", lambda: failed_checkpoints(learner) >= 1)

        redis.start()  # same port, same append-only file
        survived = load_checkpoint(learn, acknowledged.version)
        assert survived.meta.learned == acknowledged.learned, "an acknowledged checkpoint was lost"
        produce(kafka.bootstrap, learn.events_topic, messages[900:])
        final = wait_learned(learn, len(rows))
        learning.stop()
        serving.stop()
        assert final.checkpoint_failures >= 1
        assert final.learned == len(rows) and final.learned_digest == digest(len(rows))
        predicted = {m.json()["id"] for m in read_all(kafka.bootstrap, learn.predictions_topic)}
        assert predicted == {f"e-{i}" for i in range(len(rows))}
    finally:
        redis.stop()


def test_broker_sigkill_under_a_learner_and_a_predictor(
    redis_server: RedisServer, unique: Callable[[str], str], tmp_path: Path,
    caplog: pytest.LogCaptureFixture, kafka_client: str,
) -> None:
    broker = KafkaBroker(tmp_path / "kafka")
    broker.start()
    try:
        rows = phishing()
        # Short group sessions (the local broker's minimum): once the broker is back, the
        # group forms again in seconds rather than after the default 10 s session.
        learn = make_settings(broker, redis_server, unique, checkpoint_interval=0.2,
                              kafka_client=kafka_client, session_timeout=2.0)
        serve = replace(learn, events_topic=unique("live"), predictions_topic=unique("served"),
                        commit_interval=0.2)
        create_topic(broker.bootstrap, learn.events_topic, partitions=2)
        create_topic(broker.bootstrap, serve.events_topic, partitions=2)
        messages = event_bytes(rows)
        produce(broker.bootstrap, learn.events_topic, messages[:500])
        learning = InThread(Learner(learn, store_for(learn), kafka_clients(learn)))
        wait_learned(learn, 500)
        predictor = Predictor(serve, store_for(serve), kafka_clients(serve))
        serving = InThread(predictor)
        produce(broker.bootstrap, serve.events_topic, messages[:500])
        read_topic(broker.bootstrap, serve.predictions_topic, 500)

        caplog.set_level(logging.INFO)
        broker.kill()
        killed = time.monotonic()
        # Five seconds without a broker: the clients retry, and say so once, not per attempt.
        wait_for("five seconds of outage", lambda: time.monotonic() - killed > 5, timeout=10)
        down = [r for r in caplog.records if r.name.startswith("stream_learner.kafka")]
        assert 0 < len(down) < 30, [r.getMessage() for r in down]
        broker.start()
        produce(broker.bootstrap, learn.events_topic, messages[500:])
        produce(broker.bootstrap, serve.events_topic, messages[500:])
        final = wait_learned(learn, len(rows), timeout=120)
        everyone = {f"e-{i}" for i in range(len(rows))}

        def served() -> bool:
            serving.check()
            return {m.json()["id"] for m in read_all(broker.bootstrap, serve.predictions_topic)} == everyone

        wait_for("a frozen prediction for every event", served, timeout=120, every=0.5)
        learning.stop()
        serving.stop()
        assert final.learned == len(rows) and final.learned_digest == digest(len(rows))
        assert {m.json()["id"] for m in read_all(broker.bootstrap, learn.predictions_topic)} == everyone
    finally:
        broker.stop()


def test_a_stalled_redis_holds_up_no_prediction_and_a_save_whose_answer_was_lost_is_resolved(
    kafka: KafkaBroker, unique: Callable[[str], str], topic: Callable[..., str], tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    assert redis.proc is not None
    try:
        rows = phishing()
        learn = make_settings(kafka, redis, unique, events_topic=topic("events"), checkpoint_interval=0.2,
                              redis_timeout=0.5)
        serve = replace(learn, events_topic=topic("live"), predictions_topic=unique("served"))
        messages = event_bytes(rows)
        produce(kafka.bootstrap, learn.events_topic, messages[:400])
        learner = Learner(learn, store_for(learn), kafka_clients(learn))
        learning = InThread(learner)
        wait_learned(learn, 400)
        predictor = Predictor(serve, store_for(serve), kafka_clients(serve))
        serving = InThread(predictor)
        wait_for("the predictor to load a model", lambda: predictor.engine is not None)

        caplog.set_level(logging.INFO)
        os.kill(redis.proc.pid, signal.SIGSTOP)
        try:
            stalled = time.monotonic()
            produce(kafka.bootstrap, learn.events_topic, messages[400:900])
            produce(kafka.bootstrap, serve.events_topic, messages[:300])
            read_topic(kafka.bootstrap, learn.predictions_topic, 900, timeout=8)
            read_topic(kafka.bootstrap, serve.predictions_topic, 300, timeout=8)
            assert time.monotonic() - stalled < 8, "predictions waited for Redis"
            learning.check()
            serving.check()
            # A save sent to the stopped Redis times out; Redis runs it once it wakes.
            wait_for("a checkpoint to time out", lambda: failed_checkpoints(learner) >= 1, timeout=10)
            ours = [r for r in caplog.records
                    if r.name.startswith("stream_learner") and r.levelno >= logging.WARNING]
            assert len(ours) < 20, [r.getMessage() for r in ours]  # a line per attempt, not per pass
        finally:
            os.kill(redis.proc.pid, signal.SIGCONT)
        produce(kafka.bootstrap, learn.events_topic, messages[900:])
        final = wait_learned(learn, len(rows))
        learning.stop()
        serving.stop()
        assert final.learned == len(rows) and final.learned_digest == digest(len(rows))
        assert final.checkpoint_failures >= 1
        assert any("was saved although its answer was lost" in r.getMessage() for r in caplog.records)
    finally:
        redis.stop()
