"""The HTTP server of ``learn`` and ``serve`` on the real stack: metrics, health, readiness,
JSON logs, and ``POST /predict``, each checked against an oracle (the store's checkpoint, the
predictions topic, the dead-letter topic, the model opened in-process)."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from consumers.learner import Learner
from stream_learner.config import Settings
from stream_learner.engine import Engine
from stream_learner.events import Source, decode_event, encode_prediction
from tests.integration.helpers import (
    InThread,
    kafka_clients,
    latest_meta,
    load_checkpoint,
    make_settings,
    phishing,
    produce,
    read_topic,
    spawn,
    store_for,
    wait_for,
    wait_learned,
)
from tools import service
from tools.events import event_bytes
from tools.http import call
from tools.localstack import KafkaBroker, RedisServer, free_port
from tools.service import service_env

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]  # (series, labels) -> value


def samples(base: str) -> Samples:
    """``GET /metrics``, parsed by prometheus_client: (series name, labels) -> value."""
    status, text = call(base + "/metrics")
    assert status == 200
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(figures: Samples, name: str, **labels: str) -> float:
    """The first sample of ``name`` with ``labels``; NaN (equal to nothing) when there is none."""
    found = (v for (n, ls), v in figures.items() if n == name and set(labels.items()) <= ls)
    return next(found, float("nan"))


def start(command: str, settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    """``stream-learner <command>``, its output to ``log``."""
    return service.spawn(command, service_env(settings), stdout=log)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0


def test_a_learner_shows_its_figures_over_http_and_in_its_json_log(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
    topic: Callable[..., str], tmp_path: Path,
) -> None:
    rows = phishing()
    port, standby_port = free_port(), free_port()
    settings = make_settings(kafka, redis_server, unique, events_topic=topic("events"), http_port=port,
                             log_format="json", progress_interval=1.0, instance_id="one")
    base = f"http://127.0.0.1:{port}"
    bad = [("bad-1", b'{"id": "bad-1", "x": {"a": NaN}}'), ("bad-2", b"not json"), ("bad-3", b'{"x": 3}')]
    produce(kafka.bootstrap, settings.events_topic, [*event_bytes(rows), *bad])
    learner = start("learn", settings, tmp_path / "learner.log")
    standby = None
    try:
        meta = wait_learned(settings, len(rows))
        standby = start("learn", replace(settings, http_port=standby_port, instance_id="two"),
                        tmp_path / "standby.log")

        def caught_up() -> Any:
            figures = samples(base)
            latest = latest_meta(settings)
            lag = value(figures, "stream_learner_consumer_lag", topic=settings.events_topic)
            done = (latest is not None and lag == 0
                    and value(figures, "stream_learner_model_version") == latest.version)
            return (figures, latest) if done else None

        figures, latest = wait_for("the learner's metrics to show the latest checkpoint", caught_up)
        assert value(figures, "stream_learner_events_total", outcome="learned") == len(rows)
        assert value(figures, "stream_learner_events_total", outcome="predicted") == len(rows)
        assert value(figures, "stream_learner_events_total", outcome="dead_lettered") == len(bad)
        reasons = {dict(ls)["reason"]: v for (n, ls), v in figures.items()
                   if n == "stream_learner_dead_letters_total"}
        assert reasons == {reason: float(n) for reason, n in latest.dead_letters.items()}
        for name, expected in latest.metrics.items():  # the figures the checkpoint records
            metric, _, window = name.partition("@")
            shown = value(figures, "stream_learner_prequential", metric=metric, window=window or "all")
            assert shown == expected, name
        assert value(figures, "stream_learner_lease_holder") == 1
        assert value(figures, "stream_learner_checkpoint_seconds_count") >= meta.version - 1
        assert value(figures, "stream_learner_checkpoint_bytes") > 0
        assert call(base + "/healthz")[0] == 200 and call(base + "/readyz")[0] == 200

        # The standby learner is alive, and not ready: it does not hold the lease.
        other = f"http://127.0.0.1:{standby_port}"
        wait_for("the standby's server", lambda: call(other + "/healthz")[0] == 200)
        status, body = call(other + "/readyz")
        assert status == 503 and json.loads(body)["lease_held"] is False
        assert value(samples(other), "stream_learner_lease_holder") == 0
        # Its progress line says so once no event came for --progress-interval.
        idle = wait_for("the learner's idle line", lambda: idle_lines(tmp_path / "learner.log"))
    finally:
        stop(learner)
        if standby is not None:
            stop(standby)
    assert idle[-1]["events"]["learned"] == len(rows) and idle[-1]["lag"] == 0
    assert idle[-1]["dead_letters"] == {reason: int(n) for reason, n in reasons.items()}


def idle_lines(log: Path) -> list[dict[str, Any]]:
    """The figures of the learner's "idle, caught up" lines in its JSON log so far."""
    text = log.read_text()
    complete = text.splitlines() if text.endswith("\n") else text.splitlines()[:-1]
    return [doc["figures"] for doc in map(json.loads, complete)
            if doc["message"].startswith("idle, caught up")]


def test_http_predictions_equal_the_predictors_own_on_kafka_and_follow_hot_reloads(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
    topic: Callable[..., str], tmp_path: Path,
) -> None:
    rows = phishing()
    token = "a-secret-token"
    port = free_port()
    learn = make_settings(kafka, redis_server, unique, events_topic=topic("train"), checkpoint_interval=0.3)
    serve = replace(learn, events_topic=topic("live"), predictions_topic=unique("served"), http_port=port,
                    http_token=token, wait_for_model=60.0)
    base = f"http://127.0.0.1:{port}"
    predictor = start("serve", serve, tmp_path / "serve.log")
    try:
        wait_for("the predictor's server", lambda: call(base + "/healthz")[0] == 200)
        one = event_bytes(rows[:1], "early", labelled=False)[0][1]
        status, body = call(base + "/predict", one, token)
        assert status == 503 and json.loads(body)["reason"] == "not_ready"
        assert call(base + "/readyz")[0] == 503

        produce(kafka.bootstrap, learn.events_topic, event_bytes(rows[:625], "train"))
        learner = InThread(Learner(learn, store_for(learn), kafka_clients(learn)))
        v1 = wait_learned(learn, 625)
        learner.stop()
        wait_for("the predictor to be ready", lambda: call(base + "/readyz")[0] == 200)

        # The same events on Kafka and over HTTP: the same predictions but for where they came from.
        live = event_bytes(rows[625:725], "live", labelled=False)
        bad = b'{"id": "bad", "x": {"a": NaN}}'
        produce(kafka.bootstrap, serve.events_topic, [*live, ("bad", bad)])
        on_kafka = {m.json()["id"]: m.json() for m in read_topic(kafka.bootstrap, serve.predictions_topic,
                                                                  len(live))}
        letter = read_topic(kafka.bootstrap, serve.dead_letter_topic, 1)[0]
        batch = b"[" + b",".join(v for _, v in live) + b"]"
        status, body = call(base + "/predict", batch, token)
        assert status == 200, body
        answers = json.loads(body)
        assert [a["id"] for a in answers] == [k for k, _ in live]

        def without_source(doc: dict[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in doc.items() if k not in ("source", "ts")}

        assert all(without_source(a) == without_source(on_kafka[a["id"]]) for a in answers)
        assert {a["model_version"] for a in answers} == {v1.version} and answers[0]["mode"] == "frozen"
        status, body = call(base + "/predict", live[0][1], token)
        assert status == 200 and without_source(json.loads(body)) == without_source(on_kafka[live[0][0]])
        status, body = call(base + "/predict", bad, token)
        assert status == 400 and json.loads(body)["reason"] == letter.headers["reason"].decode()
        assert call(base + "/predict", live[0][1], "wrong")[0] == 401
        assert call(base + "/predict", live[0][1], "")[0] == 401

        # While the learner writes v2, every answer is one whole model's: v1's or v2's, as
        # each opened in-process says.
        answered: list[dict[str, Any]] = []
        done = threading.Event()

        def ask() -> None:
            while not done.is_set():
                status, body = call(base + "/predict", live[0][1], token)
                assert status == 200
                answered.append(json.loads(body))

        asker = threading.Thread(target=ask, daemon=True)
        asker.start()
        produce(kafka.bootstrap, learn.events_topic, event_bytes(rows[625:], "train", start=625))
        learner = InThread(Learner(learn, store_for(learn), kafka_clients(learn)))
        v2 = wait_learned(learn, len(rows))
        learner.stop()
        latest = latest_meta(learn)
        assert latest is not None
        wait_for("an HTTP answer from the latest model",
                 lambda: answered and answered[-1]["model_version"] == latest.version)
        done.set()
        asker.join(30)
        versions = [a["model_version"] for a in answered]
        assert versions == sorted(versions) and versions[0] == v1.version and v2.version <= versions[-1]
        for version in set(versions):
            expected = in_process(learn, version, live[0][1])
            assert all(without_source(a) == expected for a in answered if a["model_version"] == version)

        figures = samples(base)
        assert value(figures, "stream_learner_events_total", outcome="predicted") == len(live)
        assert value(figures, "stream_learner_reloads_total") >= 1
        assert value(figures, "stream_learner_http_predict_seconds_count") >= len(answered) + 3
        assert value(figures, "stream_learner_http_predict_events_total") >= len(live) + len(answered)
    finally:
        stop(predictor)


def in_process(settings: Settings, version: int, raw: bytes) -> dict[str, Any]:
    """What checkpoint ``version``, opened in this process, predicts for ``raw``."""
    ckpt = load_checkpoint(settings, version)
    event = decode_event(raw, Source("http", 0, 0), settings.event_fields(), ckpt.state.task)
    prediction = Engine(ckpt.state, learn=False).predict(event)
    doc = json.loads(encode_prediction(prediction, model=settings.model, version=version, mode="frozen"))
    return {k: v for k, v in doc.items() if k not in ("source", "ts")}


def test_a_port_in_use_is_one_line_naming_the_flag(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = make_settings(kafka, redis_server, unique, http_port=port)
        process = spawn("learn", settings)
        out, _ = process.communicate(timeout=60)
    assert process.returncode == 1
    errors = [line for line in out.splitlines() if "stream-learner learn:" in line]
    assert len(errors) == 1 and f"--http-port {port}" in errors[0] and "Traceback" not in out, out
