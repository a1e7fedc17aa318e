"""Late labels on real Kafka and Redis: delayed progressive validation, policies, crashes."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from kafka import KafkaProducer
from river import datasets, evaluate, linear_model, metrics, preprocessing

from consumers.learner import Learner
from consumers.predictor import Predictor
from stream_learner.cli import build_parser, iter_events, schedule
from stream_learner.config import Settings
from stream_learner.engine import id_hash
from tests.integration.helpers import (
    InThread,
    kafka_clients,
    latest_meta,
    load_checkpoint,
    make_settings,
    phishing,
    produce,
    read_all,
    spawn,
    store_for,
    wait_for,
    wait_learned,
)
from tests.integration.test_chaos import start_learner
from tools.events import event_bytes
from tools.localstack import KafkaBroker, RedisServer

DELAY = 50


def late_settings(kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
                  topic: Callable[..., str], **overrides: Any) -> Settings:
    return make_settings(kafka, redis_server, unique, events_topic=topic("events"),
                         labels_topic=topic("labels"), **overrides)


def produce_with_delay(settings: Settings, *extra: str) -> None:
    proc = spawn("produce", settings, "--dataset", "Phishing", "--label-delay", str(DELAY), *extra)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out


def river_with_delay() -> tuple[Any, Any]:
    model, accuracy = preprocessing.StandardScaler() | linear_model.LogisticRegression(), metrics.Accuracy()
    evaluate.progressive_val_score(datasets.Phishing(), model, accuracy, delay=DELAY)
    return model, accuracy


def test_delayed_labels_equal_progressive_val_score_with_delay(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
    topic: Callable[..., str],
) -> None:
    settings = late_settings(kafka, redis_server, unique, topic)
    produce_with_delay(settings)
    learner = InThread(Learner(settings, store_for(settings), kafka_clients(settings)))
    wait_learned(settings, 1250)
    learner.stop()

    oracle, accuracy = river_with_delay()
    ckpt = load_checkpoint(settings)
    assert ckpt.state.metrics.cumulative[0].get() == accuracy.get()
    assert ckpt.state.model["LogisticRegression"].weights == oracle["LogisticRegression"].weights
    assert ckpt.meta.labels == {"matched": 1250, "early": 0, "late": 0, "unknown": 0, "duplicate": 0,
                                "expired": 0, "evicted": 0, "waiting": 0}
    predictions = [m.json() for m in read_all(kafka.bootstrap, settings.predictions_topic)]
    assert len(predictions) == 1250  # one per event, none for a label


def test_concurrently_consumed_labels_equal_a_model_learning_them_in_order(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
    topic: Callable[..., str],
) -> None:
    """Events and labels produced live on two topics while the learner consumes both."""
    settings = late_settings(kafka, redis_server, unique, topic)
    learner = InThread(Learner(settings, store_for(settings), kafka_clients(settings)))
    wait_for("the learner's first checkpoint", lambda: latest_meta(settings) is not None)
    rows = list(datasets.Phishing())
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, linger_ms=1)
    for i, (x, _) in enumerate(rows):
        if i >= DELAY:
            j = i - DELAY
            producer.send(settings.labels_topic, json.dumps({"id": f"p-{j}", "y": rows[j][1]}).encode())
        producer.send(settings.events_topic, json.dumps({"id": f"p-{i}", "x": x}).encode())
        if i % 25 == 0:
            producer.flush()  # a live trickle, not one burst
    for j in range(len(rows) - DELAY, len(rows)):
        producer.send(settings.labels_topic, json.dumps({"id": f"p-{j}", "y": rows[j][1]}).encode())
    producer.flush()
    producer.close()
    try:
        meta = wait_learned(settings, len(rows), timeout=120)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; latest checkpoint: {latest_meta(settings)}") from None
    finally:
        learner.stop()  # raises what the learner thread raised, if anything
    assert meta.learned == len(rows) and meta.labels["matched"] == len(rows)
    # Live, a label may reach the learner after events stamped later than it, so the order is
    # not simulate_qa's. The labels are still learned in their own order (both topics are read
    # in order), and each prediction says how many were learned before it: the exact oracle is a
    # model that learns the rows in order and predicts each event after that many.
    predictions = sorted((m.json() for m in read_all(kafka.bootstrap, settings.predictions_topic)),
                         key=lambda p: p["learned"])
    assert len(predictions) == len(rows)
    oracle = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    accuracy, learned = metrics.Accuracy(), 0
    for p in predictions:
        while learned < p["learned"]:
            oracle.learn_one(*rows[learned])
            learned += 1
        x, y = rows[int(p["id"].removeprefix("p-"))]
        proba = oracle.predict_proba_one(x)
        assert (p["prediction"], sorted(p["proba"].values())) == (max(proba, key=proba.__getitem__),
                                                                   sorted(proba.values())), p
        accuracy.update(y, p["prediction"])
    assert load_checkpoint(settings).state.metrics.cumulative[0].get() == accuracy.get()


def test_expiry_late_unknown_duplicate_labels_and_a_bound_on_pending(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
    topic: Callable[..., str],
) -> None:
    settings = late_settings(kafka, redis_server, unique, topic, label_ttl=10.0, max_pending=1000,
                             checkpoint_every=500)
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, linger_ms=5)
    ev, lab = settings.events_topic, settings.labels_topic

    def send(topic_name: str, doc: dict[str, Any], at: float) -> None:
        producer.send(topic_name, json.dumps(doc).encode(), timestamp_ms=int(at * 1000))

    t0 = time.time() - 3600
    send(ev, {"id": "a", "x": {"f": 1.0}, "ts": t0}, t0)
    send(ev, {"id": "b", "x": {"f": 2.0}, "ts": t0 + 5}, t0 + 5)
    send(lab, {"id": "b", "y": True}, t0 + 6)
    send(lab, {"id": "b", "y": True}, t0 + 7)         # a second label: learned once
    send(ev, {"id": "c", "x": {"f": 3.0}, "ts": t0 + 20}, t0 + 20)  # "a" is past the TTL now
    send(lab, {"id": "a", "y": False}, t0 + 21)       # late
    send(lab, {"id": "zz", "y": False}, t0 + 22)      # early, then unknown after the TTL
    send(lab, {"y": False}, t0 + 23)                  # no id: dead-lettered
    for i in range(10_000):                           # never labelled, over 10 s of event time
        send(ev, {"id": f"n-{i}", "x": {"f": float(i % 10)}, "ts": t0 + 30 + i * 1e-3}, t0 + 30 + i * 1e-3)
    producer.flush()
    producer.close()

    learner = InThread(Learner(settings, store_for(settings), kafka_clients(settings)))
    peaks = []

    def done() -> bool:
        meta = latest_meta(settings)
        if meta is not None and meta.labels:
            peaks.append(meta.labels["waiting"])
        return meta is not None and sum(meta.offsets.values()) == 10_003 + 5

    wait_for("every message to be checkpointed", done, timeout=120, every=0.2)
    learner.stop()
    meta = load_checkpoint(settings).meta
    assert max(peaks) <= 1000, "pending events grew past the bound"
    # "a" expires when "c" comes, "c" when the never-labelled stream passes it by 10 s;
    # of the 10,000 never-labelled events, all but the last 1,000 are evicted.
    assert meta.labels == {"matched": 1, "early": 1, "late": 1, "unknown": 1, "duplicate": 1,
                           "expired": 2, "evicted": 9_000, "waiting": 1000}
    assert meta.learned == 1
    assert meta.dead_letters == {"missing_id": 1}


def test_sigkill_with_late_labels_learns_every_pair_exactly_once(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
    topic: Callable[..., str], kafka_client: str,
) -> None:
    settings = late_settings(kafka, redis_server, unique, topic, checkpoint_every=150,
                             checkpoint_interval=0.2, lease_ttl=1.0, kafka_client=kafka_client,
                             session_timeout=4.0)  # restarts rejoin in seconds (docs/stack.md)
    args = build_parser().parse_args(["produce", "--dataset", "Phishing", "--repeat", "3"])
    events = list(iter_events(settings, args))
    messages = schedule(settings, events, DELAY)
    feeder = threading.Thread(target=_feed, args=(kafka.bootstrap, messages, 0.5))  # ~19 s of feed
    feeder.start()
    rng = random.Random(5)
    for _ in range(4):
        before = version_of(settings)
        proc = start_learner(settings)
        # Killed once it learns (lease, partitions, a checkpoint), at a random moment of that.
        wait_for("the learner to learn and checkpoint",
                 lambda: version_of(settings) > before or not feeder.is_alive(), 60)  # noqa: B023
        time.sleep(rng.uniform(0.0, 1.0))
        proc.kill()
        proc.wait(30)
    feeder.join()
    ids = [key for key, _ in events]
    final = InThread(Learner(settings, store_for(settings), kafka_clients(settings)))
    meta = wait_learned(settings, len(ids), timeout=120)
    final.stop()
    assert meta.learned == len(ids) and meta.labels["matched"] == len(ids)
    assert meta.learned_digest == sum(id_hash(i) for i in ids) % 2**64


def version_of(settings: Settings) -> int:
    meta = latest_meta(settings)
    return 0 if meta is None else meta.version


def _feed(bootstrap: str, messages: list[tuple[str, str, dict[str, Any]]], pause: float) -> None:
    """Produce 200 messages every ``pause`` seconds, timestamps in sending order."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    base = int(time.time() * 1000)
    for seq, (topic_name, key, doc) in enumerate(messages):
        producer.send(topic_name, json.dumps(doc).encode(), key=key.encode(), timestamp_ms=base + seq)
        if seq % 200 == 199:
            producer.flush()
            time.sleep(pause)  # pacing the feed
    producer.flush()
    producer.close()


def test_a_frozen_predictor_ignores_the_labels_topic(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
    topic: Callable[..., str],
) -> None:
    settings = late_settings(kafka, redis_server, unique, topic)
    rows = phishing()
    produce(kafka.bootstrap, settings.events_topic, event_bytes(rows[:200]))
    unlabelled = replace(settings, labels_topic="")
    learner = InThread(Learner(unlabelled, store_for(settings), kafka_clients(unlabelled)))
    wait_learned(settings, 200)
    learner.stop()

    serve = replace(settings, events_topic=topic("live"), predictions_topic=unique("served"))
    predictor = Predictor(serve, store_for(serve), kafka_clients(serve))
    serving = InThread(predictor)
    produce(kafka.bootstrap, settings.labels_topic,
            [(None, json.dumps({"id": f"e-{i}", "y": True}).encode()) for i in range(100)])
    produce(kafka.bootstrap, serve.events_topic, event_bytes(rows[:50], labelled=False))
    wait_for("50 frozen predictions",
             lambda: len(read_all(kafka.bootstrap, serve.predictions_topic)) >= 50)
    assert {t for t, _ in predictor.assigned} == {serve.events_topic}
    serving.stop()
    assert len(read_all(kafka.bootstrap, serve.predictions_topic)) == 50
