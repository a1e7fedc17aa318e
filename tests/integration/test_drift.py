"""Drift alerts on the real stack: a learner on a stream whose concept flips halfway alerts at
exactly the events where River's detector, fed the same errors in-process, fires."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

from river import drift

from stream_learner.models import build_model
from tests.integration.helpers import (
    latest_meta,
    make_settings,
    phishing,
    produce,
    read_topic,
    spawn,
    wait_for,
    wait_learned,
)
from tests.integration.test_http import samples, value
from tools.events import event_bytes
from tools.localstack import KafkaBroker, RedisServer, free_port

SPEC = "preprocessing.StandardScaler() | linear_model.LogisticRegression()"


def test_alerts_fire_where_the_same_detector_fires_in_process_and_start_a_challenger(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
    topic: Callable[..., str], tmp_path: Path,
) -> None:
    rows = phishing()
    half = len(rows) // 2
    rows = [(x, y if i < half else not y) for i, (x, y) in enumerate(rows)]
    model, detector, fired = build_model(SPEC), drift.ADWIN(), []
    for i, (x, y) in enumerate(rows):
        if model.predict_proba_one(x):
            detector.update(float(model.predict_one(x) != y))
            if detector.drift_detected:
                fired.append(f"e-{i}")
        model.learn_one(x, y)
    assert any(int(i[2:]) >= half for i in fired)

    port = free_port()
    settings = make_settings(kafka, redis_server, unique, events_topic=topic("events"), model_spec=SPEC,
                             drift_detector="drift.ADWIN()", alerts_topic=unique("alerts"),
                             on_drift="start-challenger", http_port=port)
    produce(kafka.bootstrap, settings.events_topic, event_bytes(rows))
    learner = spawn("learn", settings)
    try:
        wait_learned(settings, len(rows))
        alerts = [m.json() for m in read_topic(kafka.bootstrap, settings.alerts_topic, len(fired))]
        counted = wait_for("the drift counter", lambda: value(samples(f"http://127.0.0.1:{port}"),
                                                              "stream_learner_drift_total") == len(fired))
        assert counted
    finally:
        learner.send_signal(signal.SIGTERM)
        out, _ = learner.communicate(timeout=60)
    assert learner.returncode == 0, out[-3000:]
    assert [a["id"] for a in alerts] == fired
    last = alerts[-1]
    assert (last["model"], last["detector"], last["source"]) == (
        settings.model, "drift.ADWIN()", f"{settings.events_topic}/0/{fired[-1][2:]}")
    assert last["drifts"] == len(fired) and last["error"] == "misclassification (0/1)"
    flip = next(a for a in alerts if a["offset"] >= half)  # the errors jumped there
    assert flip["error_after"] > (flip["error_before"] or 0.0)
    assert out.count("drift: drift.ADWIN() fired at") == len(fired)

    # The challenger of the last drift learned from its event on.
    meta = latest_meta(settings)
    assert meta is not None
    start = int(fired[-1][2:])
    assert meta.challengers[last["challenger"]]["learned"] == len(rows) - start
