"""Promotion on the real stack: by an operator's request and by the policy, checked against
models trained in-process on the same events."""

from __future__ import annotations

import math
import signal
import subprocess
from collections.abc import Callable
from typing import Any

from river import metrics

from consumers.learner import Learner
from stream_learner.models import build_model
from tests.integration.helpers import (
    InThread,
    kafka_clients,
    latest_meta,
    load_checkpoint,
    make_settings,
    phishing,
    produce,
    read_all,
    read_topic,
    spawn,
    store_for,
    wait_for,
    wait_learned,
)
from tools.events import event_bytes
from tools.localstack import KafkaBroker, RedisServer

BAD = "preprocessing.StandardScaler() | linear_model.LogisticRegression(optimizer=optim.SGD(0.0005))"
GOOD = "preprocessing.StandardScaler() | linear_model.LogisticRegression()"


def run(command: str, settings: Any, *args: str) -> subprocess.CompletedProcess[str]:
    proc = spawn(command, settings, *args)
    out, _ = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out)


def prequential(spec: str, rows: list[Any]) -> list[dict[Any, float]]:
    """The probabilities ``spec`` gives each row before learning it, in order."""
    model, out = build_model(spec), []
    for x, y in rows:
        out.append(model.predict_proba_one(x))
        model.learn_one(x, y)
    return out


def test_an_operator_promotes_a_challenger_at_the_next_checkpoint_and_a_restart_keeps_it(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
    topic: Callable[..., str],
) -> None:
    settings = make_settings(kafka, redis_server, unique, events_topic=topic("events"), model_spec=BAD,
                             challengers=(f"good={GOOD}",), audit_topic=unique("audit"))
    rows = phishing()
    produce(kafka.bootstrap, settings.events_topic, event_bytes(rows[:600]))
    learner = spawn("learn", settings)
    try:
        version = wait_learned(settings, 600).version
        refused = run("models", settings, "promote", "--challenger", "nobody")
        assert refused.returncode == 1 and refused.stdout.strip().splitlines() == [
            f"stream-learner models: StreamLearnerError: model {settings.model} v{version} has no "
            "challenger 'nobody' (its challengers: good)"]
        asked = run("models", settings, "promote", "--challenger", "good", "--reason", "ops said so")
        assert asked.returncode == 0, asked.stdout
        assert "promotion of challenger good requested" in asked.stdout
        wait_for("the promotion", lambda: getattr(latest_meta(settings), "spec", "") == GOOD)
        produce(kafka.bootstrap, settings.events_topic, event_bytes(rows[600:], start=600))
        wait_learned(settings, len(rows))
    finally:
        learner.send_signal(signal.SIGTERM)
        out, _ = learner.communicate(timeout=60)
    assert learner.returncode == 0, out[-3000:]
    assert "challenger good promoted to champion" in out

    ckpt = load_checkpoint(settings)
    oracle = build_model(GOOD)
    for x, y in rows:
        oracle.learn_one(x, y)
    assert ckpt.state.model["LogisticRegression"].weights == oracle["LogisticRegression"].weights
    assert ckpt.meta.spec == GOOD and ckpt.meta.challengers == {} and ckpt.meta.learned == len(rows)
    entry = ckpt.meta.history[-1]
    assert (entry["action"], entry["by"], entry["reason"], entry["challenger"]) == (
        "promote", "operator", "ops said so", "good")
    assert 600 <= entry["events"] < len(rows)

    # Before the promotion the former champion answered, from then on the promoted one.
    switch = entry["events"]
    bad, good = prequential(BAD, rows), prequential(GOOD, rows)
    answers = {m.json()["id"]: m.json() for m in read_topic(kafka.bootstrap, settings.predictions_topic,
                                                            len(rows))}
    for i in range(len(rows)):
        doc = answers[f"e-{i}"]
        expected = (bad if i < switch else good)[i]
        assert math.isclose(doc["proba"]["true"], expected[True], rel_tol=0, abs_tol=0), i
        assert doc["variant"] == "champion"

    audit = [m.json() for m in read_all(kafka.bootstrap, settings.audit_topic)]
    assert [(a["model"], a["action"], a["request"]) for a in audit] == [
        (settings.model, "promote", entry["request"])]
    history = run("models", settings, "history")
    assert history.returncode == 0
    assert f"v{entry['version']}" in history.stdout and "by operator: ops said so" in history.stdout

    # A restart with the same flags goes on with the promoted champion, and no challenger.
    produce(kafka.bootstrap, settings.events_topic, event_bytes(rows[:50], prefix="again"))
    again = spawn("learn", settings)
    try:
        wait_learned(settings, len(rows) + 50)
    finally:
        again.send_signal(signal.SIGTERM)
        out, _ = again.communicate(timeout=60)
    assert again.returncode == 0, out[-3000:]
    assert "was promoted to champion: not started again" in out
    meta = latest_meta(settings)
    assert meta is not None and meta.spec == GOOD and meta.challengers == {}


def windowed(spec: str, rows: list[Any], last: int) -> float:
    """River's LogLoss of ``spec`` over the last ``last`` of its prequential predictions."""
    metric = metrics.LogLoss()
    for (_, y), proba in list(zip(rows, prequential(spec, rows), strict=True))[-last:]:
        metric.update(y, proba)
    return float(metric.get())


def test_the_policy_promotes_a_better_challenger_on_the_evidence_river_gives(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
    topic: Callable[..., str],
) -> None:
    settings = make_settings(kafka, redis_server, unique, events_topic=topic("events"), model_spec=BAD,
                             challengers=(f"good={GOOD}",), promote_on="LogLoss", promote_margin=0.05,
                             promote_min_events=300, promote_window=200, checkpoint_every=100)
    rows = phishing()
    produce(kafka.bootstrap, settings.events_topic, event_bytes(rows))
    learner = InThread(Learner(settings, store_for(settings), kafka_clients(settings)))
    wait_learned(settings, len(rows))
    learner.stop()

    meta = latest_meta(settings)
    assert meta is not None and meta.spec == GOOD and meta.learned == len(rows)
    [entry] = meta.history
    assert entry["by"] == "policy" and entry["learned"]["challenger"] >= 300
    seen = rows[:entry["events"]]
    champion, challenger = windowed(BAD, seen, 200), windowed(GOOD, seen, 200)
    assert math.isclose(entry["compared"]["champion"], champion, rel_tol=1e-12)
    assert math.isclose(entry["compared"]["challenger"], challenger, rel_tol=1e-12)
    assert (champion - challenger) / champion >= 0.05
