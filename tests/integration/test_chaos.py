"""Kill the learner at random moments and at named crash points; after recovery every labelled
event is learned exactly once, every event has a prediction, and repeated predictions agree.

Modelled on Kafka's and Flink's exactly-once tests: a real broker and Redis, the learner as a
real process killed with SIGKILL, and an oracle computed in-process from the same events.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer
from river import evaluate, linear_model, metrics, optim, preprocessing

from stream_learner.config import Settings
from stream_learner.engine import id_hash
from tests.integration.helpers import (
    latest_meta,
    load_checkpoint,
    make_settings,
    phishing,
    produce,
    read_all,
    wait_for,
    wait_learned,
)
from tools.localstack import KafkaBroker, RedisServer
from tools.service import service_env, spawn

# (crash point, at its nth hit, with checkpoints forked): the small model of these tests is
# pickled in the loop unless --checkpoint-inline-bytes is 0, so both writers are crashed.
CRASH_POINTS = [("after_predict", 40, False), ("after_publish", 60, False), ("after_flush", 1, False),
                ("during_checkpoint", 1, False), ("during_checkpoint", 1, True),
                ("after_checkpoint", 1, False), ("in_revocation", 1, False)]


# A restarted learner gets the killed one's partitions once its session expires: a short one
# (the local broker allows 2 s) keeps the restarts of these tests quick.
SESSION_S = 4.0
KILLS = 5  # at random moments, each of a learner that is learning
# A challenger in the same checkpoint: exactly once holds for it as for the champion.
SLOW = "preprocessing.StandardScaler() | linear_model.LogisticRegression(optimizer=optim.SGD(0.005))"
CHALLENGER = f"slow={SLOW}"


def make_events(count: int, prefix: str) -> list[tuple[str, bytes, bool]]:
    """(id, bytes, labelled): Phishing rows, every tenth without its label."""
    rows = phishing()
    out = []
    for i in range(count):
        x, y = rows[i % len(rows)]
        labelled = i % 10 != 9
        doc: dict[str, Any] = {"id": f"{prefix}-{i}", "x": x, **({"y": y} if labelled else {})}
        out.append((doc["id"], json.dumps(doc).encode(), labelled))
    return out


def start_learner(settings: Settings, crash_at: str = "", forked: bool = False) -> subprocess.Popen[bytes]:
    env = service_env(replace(settings, checkpoint_inline_bytes=0) if forked else settings)
    if crash_at:
        env["SL_TEST_CRASH_AT"] = crash_at
    return spawn("learn", env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


class Feeder:
    """Produces events in the background at a steady rate, in order: a tenth of a second's worth
    at a time, each acknowledged by the broker (acks=all) before the next."""

    def __init__(self, bootstrap: str, topic: str, events: list[tuple[str, bytes, bool]],
                 per_second: float) -> None:
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(bootstrap, topic, events, per_second))
        self.thread.start()

    def _run(self, bootstrap: str, topic: str, events: list[tuple[str, bytes, bool]], rate: float) -> None:
        try:
            producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
            chunk = max(1, int(rate / 10))
            start = time.monotonic()
            for n, first in enumerate(range(0, len(events), chunk)):
                futures = [producer.send(topic, key=k.encode(), value=v)
                           for k, v, _ in events[first:first + chunk]]
                producer.flush()
                assert all(f.succeeded() for f in futures)
                # Pacing the feed on a schedule, not waiting for a result.
                time.sleep(max(0.0, start + (n + 1) / 10 - time.monotonic()))
            producer.close()
        except BaseException as exc:
            self.error = exc
        finally:
            self.done.set()

    def join(self) -> None:
        self.thread.join()
        if self.error is not None:
            raise AssertionError("the feeder failed") from self.error


@contextmanager
def intruder(settings: Settings) -> Iterator[None]:
    """A consumer joining the learner's group, forcing a rebalance (and a revocation)."""
    stop = threading.Event()

    def run() -> None:
        consumer = KafkaConsumer(settings.events_topic, bootstrap_servers=settings.bootstrap_servers,
                                 group_id=settings.consumer_group("learn"), enable_auto_commit=False)
        while not stop.is_set():
            consumer.poll(timeout_ms=100)
        consumer.close(autocommit=False)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(60)


def chaos(kafka: KafkaBroker, settings: Settings, events: list[tuple[str, bytes, bool]],
          seed: int) -> None:
    """Random SIGKILLs of learners that are learning, while events stream in (every other
    learner forking its checkpoints), then every named crash point."""
    rng = random.Random(seed)
    extra = events[-100 * (len(CRASH_POINTS) + 1):]
    # ~20 s of feed: about as long as the kills take, so that they all strike on a live stream.
    feeder = Feeder(kafka.bootstrap, settings.events_topic, events[:-len(extra)], per_second=350)
    kills = 0
    while kills < KILLS or not feeder.done.is_set():
        before = _version(settings)
        proc = start_learner(settings, forked=kills % 2 == 1)
        # Killed once it learns (it holds the lease, owns the partitions and has checkpointed),
        # at a random moment of that: a learner still starting up proves nothing.
        wait_for("the learner to learn and checkpoint",
                 lambda: _newer_than(settings, before) or feeder.done.is_set(), 60)  # noqa: B023
        time.sleep(rng.uniform(0.0, 1.0))
        proc.kill()
        proc.wait(30)
        kills += 1
    feeder.join()

    for n, (point, nth, forked) in enumerate(CRASH_POINTS):
        produce(kafka.bootstrap, settings.events_topic, [(k, v) for k, v, _ in extra[n * 100:(n + 1) * 100]])
        before = _version(settings)
        proc = start_learner(settings, crash_at=f"{point}:{nth}", forked=forked)
        if point == "in_revocation":
            wait_for("the learner to own the partitions and checkpoint",
                     partial(_newer_than, settings, before), 60)
            with intruder(settings):
                _expect_killed(proc, point)
        else:
            _expect_killed(proc, point)

    final = start_learner(settings)  # a clean run over the last 100 events, stopped by SIGTERM
    produce(kafka.bootstrap, settings.events_topic, [(k, v) for k, v, _ in extra[-100:]])
    try:
        labelled = sum(1 for _, _, lab in events if lab)
        wait_learned(settings, labelled, timeout=120)
        wait_for("every event to be checkpointed",
                 lambda: sum(load_checkpoint(settings).meta.offsets.values()) == len(events), 60)
    finally:
        final.send_signal(signal.SIGTERM)
        _, err = final.communicate(timeout=60)
    assert final.returncode == 0, err.decode()[-3000:]


def _newer_than(settings: Settings, version: int) -> bool:
    return _version(settings) > version


def _version(settings: Settings) -> int:
    meta = latest_meta(settings)
    return meta.version if meta else 0


def _expect_killed(proc: subprocess.Popen[bytes], point: str) -> None:
    try:
        _, err = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"crash point {point} was never reached; its log:\n"
                             f"{err.decode(errors='replace')[-3000:]}") from None
    assert proc.returncode == -signal.SIGKILL, f"{point}: exit {proc.returncode}: {err.decode()[-2000:]}"


def check_predictions(kafka: KafkaBroker, settings: Settings, events: list[tuple[str, bytes, bool]],
                      variant: str = "champion") -> None:
    """Every event has a prediction (of ``variant``); where one was published twice, both are
    identical."""
    ids = {k for k, _, _ in events}
    end = wait_for("a prediction for every event",
                   lambda: _all_predicted(kafka, settings, ids), timeout=60, every=0.5)
    by_id: dict[str, set[bytes]] = defaultdict(set)
    for message in end:
        assert message.json()["variant"] == variant
        by_id[message.json()["id"]].add(message.value)
    assert set(by_id) == ids
    differing = {k: v for k, v in by_id.items() if len(v) > 1}
    assert not differing, f"{len(differing)} events have differing predictions, e.g. {next(iter(differing))}"


def _all_predicted(kafka: KafkaBroker, settings: Settings, ids: set[str]) -> Any:
    messages = read_all(kafka.bootstrap, settings.predictions_topic)
    return messages if {m.json()["id"] for m in messages} >= ids else None


def expected_digest(events: list[tuple[str, bytes, bool]]) -> int:
    return sum(id_hash(k) for k, _, lab in events if lab) % 2**64


# Each chaos test on one client (each client gets one): three partitions, with its rebalances,
# on kafka-python, whose rebalance listener is the service's own code; one on librdkafka.
@pytest.mark.parametrize("kafka_client", ["librdkafka"])
def test_chaos_on_one_partition_equals_the_in_process_model(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
    topic: Callable[..., str], kafka_client: str,
) -> None:
    settings = make_settings(kafka, redis_server, unique, events_topic=topic("events"),
                             checkpoint_every=300, checkpoint_interval=0.3, lease_ttl=1.0,
                             session_timeout=SESSION_S, kafka_client=kafka_client,
                             challengers=(CHALLENGER,), shadow_topic=unique("shadow"))
    events = make_events(8000, "one")
    chaos(kafka, settings, events, seed=int(os.environ.get("CHAOS_SEED", "7")))

    ckpt = load_checkpoint(settings)
    labelled = [json.loads(v) for _, v, lab in events if lab]
    assert ckpt.meta.learned == ckpt.state.learned == len(labelled)
    assert ckpt.meta.learned_digest == expected_digest(events)
    oracle = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    for doc in labelled:
        oracle.learn_one(doc["x"], doc["y"])
    model = ckpt.state.model
    assert model["LogisticRegression"].weights == oracle["LogisticRegression"].weights
    assert model["LogisticRegression"].intercept == oracle["LogisticRegression"].intercept
    for doc in labelled[:500]:
        assert model.predict_proba_one(doc["x"]) == oracle.predict_proba_one(doc["x"])
    check_predictions(kafka, settings, events)

    challenger = ckpt.state.challengers["slow"]
    assert challenger.learned == len(labelled) and not challenger.error
    assert ckpt.meta.challengers["slow"]["learned_digest"] == expected_digest(events)
    slow = preprocessing.StandardScaler() | linear_model.LogisticRegression(optimizer=optim.SGD(0.005))
    accuracy = metrics.Accuracy()
    evaluate.progressive_val_score([(d["x"], d["y"]) for d in labelled], slow, accuracy)
    assert challenger.model["LogisticRegression"].weights == slow["LogisticRegression"].weights
    assert ckpt.meta.challengers["slow"]["metrics"]["Accuracy"] == round(accuracy.get(), 6)
    check_predictions(kafka, replace(settings, predictions_topic=settings.shadow_topic), events,
                      variant="slow")


@pytest.mark.parametrize("kafka_client", ["kafka-python"])
def test_chaos_on_three_partitions_learns_each_event_exactly_once(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
    topic: Callable[..., str], kafka_client: str,
) -> None:
    settings = make_settings(kafka, redis_server, unique, events_topic=topic("events", partitions=3),
                             checkpoint_every=300, checkpoint_interval=0.3, lease_ttl=1.0,
                             session_timeout=SESSION_S, kafka_client=kafka_client,
                             challengers=(CHALLENGER,))
    events = make_events(8000, "three")
    chaos(kafka, settings, events, seed=int(os.environ.get("CHAOS_SEED", "11")))

    ckpt = load_checkpoint(settings)
    assert ckpt.meta.learned == sum(1 for _, _, lab in events if lab)
    assert ckpt.meta.learned_digest == expected_digest(events)
    assert sum(ckpt.meta.offsets.values()) == len(events)
    assert len(ckpt.meta.offsets) == 3
    assert ckpt.meta.challengers["slow"]["learned_digest"] == expected_digest(events)
    assert ckpt.meta.challengers["slow"]["learned"] == ckpt.meta.learned
    check_predictions(kafka, settings, events)
