"""The board, the exposition, POST /predict and the HTTP server, in-process (no Kafka, no Redis)."""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from stream_learner.engine import Engine, ModelState
from stream_learner.events import FieldNames, Limits
from stream_learner.observe import server as server_module
from stream_learner.observe.board import HEALTH_DEADLINE_S, Board
from stream_learner.observe.exposition import METRICS, Exposition
from stream_learner.observe.predict import MAX_EVENTS, FrozenModel, HttpPredict
from stream_learner.observe.server import HttpServer
from tools.http import call

SPEC = "preprocessing.StandardScaler() | linear_model.LogisticRegression()"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def trained() -> Engine:
    state = ModelState.fresh(SPEC, "binary")
    learner = Engine(state)
    from stream_learner.events import Event, Source

    for i in range(50):
        learner.process(Event(f"e{i}", None, None, {"a": float(i % 7), "b": float(i % 3)}, i % 2 == 0,
                              Source("t", 0, i)))
    return Engine(state, learn=False)


@pytest.fixture
def served() -> Iterator[tuple[str, Board, HttpPredict]]:
    board = Board("fraud", "frozen")
    exposition = Exposition(board)
    engine = trained()
    predict = HttpPredict("fraud", FieldNames(), Limits(max_bytes=4096), lambda: FrozenModel(engine, 7),
                          counted=exposition.predict_events.inc)
    with HttpServer(board, exposition, host="127.0.0.1", port=0, predict=predict, token="s3cret") as server:
        yield f"http://127.0.0.1:{server.port}", board, predict


def test_tally_counts_every_rise_and_rebases_on_a_fall() -> None:
    board = Board("m", "learn")
    for events in (10, 4, 6, 20):  # a rewind to 4, then on
        board.batch(events=events, predicted=events, learned=events, dead_letters={"bad_json": events // 10},
                    version=1)
    snap = board.snapshot()
    assert snap.outcomes == {"predicted": 10 + 2 + 14, "learned": 26, "dead_lettered": 1 + 2}
    assert snap.dead_letters == {"bad_json": 3}


def test_health_fails_once_the_loop_has_not_come_round_within_the_deadline() -> None:
    clock = Clock()
    board = Board("m", "learn", clock=clock)
    assert board.snapshot().healthy
    clock.now += HEALTH_DEADLINE_S - 1
    assert board.snapshot().healthy
    clock.now += 2
    assert not board.snapshot().healthy
    board.beat()
    assert board.snapshot().healthy


def test_readiness_needs_a_model_partitions_and_for_a_learner_the_lease() -> None:
    board = Board("m", "learn")
    board.set(lease_held=False)
    board.loaded(3)
    board.refresh(metrics={}, lags={("events", 0): 5})
    assert not board.snapshot().ready  # a standby
    board.set(lease_held=True)
    assert board.snapshot().ready
    board.refresh(metrics={}, lags={})
    assert not board.snapshot().ready  # no partitions
    frozen = Board("m", "frozen")
    frozen.refresh(metrics={}, lags={("events", 0): 0})
    assert not frozen.snapshot().ready
    frozen.loaded(1)
    assert frozen.snapshot().ready


def test_the_exposition_names_only_the_listed_metrics_with_the_checkpoints_figures() -> None:
    board = Board("m", "learn")
    board.set(lease_held=True)
    board.batch(events=5, predicted=5, learned=4, dead_letters={"too_large": 1}, version=2)
    board.refresh(metrics={"Accuracy": 0.75, "Accuracy@1000": 0.5, "R2": None},
                  lags={("ev", 1): 3, ("ev", 2): None})
    board.checkpointed(version=3, nbytes=1500, pause_s=0.004)
    board.checkpointed(version=4, nbytes=1600, pause_s=20.0)
    families = {f.name: f for f in text_string_to_metric_families(Exposition(board).render().decode())}
    for name in families:
        assert name in METRICS or name + "_total" in METRICS, name
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value
              for f in families.values() for s in f.samples}
    accuracy = ("stream_learner_prequential", (("metric", "Accuracy"), ("model", "m")))
    assert values[(accuracy[0], (*accuracy[1], ("window", "all")))] == 0.75
    assert values[(accuracy[0], (*accuracy[1], ("window", "1000")))] == 0.5
    assert not any(k[0] == "stream_learner_prequential" and ("metric", "R2") in k[1] for k in values)
    lag = {k: v for k, v in values.items() if k[0] == "stream_learner_consumer_lag"}
    assert list(lag.values()) == [3.0]  # an unknown end is no figure rather than a wrong one
    assert values[("stream_learner_model_version", (("mode", "learn"), ("model", "m")))] == 4
    assert values[("stream_learner_checkpoint_seconds_bucket", (("le", "0.005"), ("model", "m")))] == 1
    assert values[("stream_learner_checkpoint_seconds_bucket", (("le", "+Inf"), ("model", "m")))] == 2
    assert values[("stream_learner_checkpoint_seconds_count", (("model", "m"),))] == 2
    learned = ("stream_learner_events_total", (("mode", "learn"), ("model", "m"), ("outcome", "learned")))
    assert values[learned] == 4


def test_the_status_endpoint_gives_the_points_after_since(served: tuple[str, Board, HttpPredict]) -> None:
    base, board, _ = served
    board.loaded(7)
    board.refresh(metrics={"Accuracy": 0.5}, lags={("ev", 0): 2})
    doc = json.loads(call(base + "/api/status")[1])
    assert doc["version"] == 7 and doc["lags"] == [{"topic": "ev", "partition": 0, "lag": 2}]
    assert len(doc["points"]) == 1 and doc["points"][0]["metrics"] == {"Accuracy": 0.5}
    assert json.loads(call(base + f"/api/status?since={doc['points'][0]['at']}")[1])["points"] == []
    assert json.loads(call(base + "/api/status?since=garbage")[1])["points"] != []
    assert call(base + "/nope")[0] == 404 and call(base + "/static/../server.py")[0] == 404
    status, page = call(base + "/")
    assert status == 200 and b"<html" in page.lower()


def test_predict_needs_the_token_and_answers_in_the_prediction_contract(
    served: tuple[str, Board, HttpPredict],
) -> None:
    base, _, _ = served
    event = b'{"id": "a", "x": {"a": 1.0, "b": 2.0}}'
    assert call(base + "/predict", event)[0] == 401
    assert call(base + "/predict", event, token="wrong")[0] == 401
    status, body = call(base + "/predict", event, token="s3cret")
    doc = json.loads(body)
    assert status == 200 and doc["id"] == "a" and doc["model_version"] == 7 and doc["mode"] == "frozen"
    assert set(doc["proba"]) == {"true", "false"}
    status, body = call(base + "/predict", b"[" + b",".join([event] * 3) + b"]", token="s3cret")
    assert status == 200 and [d["id"] for d in json.loads(body)] == ["a"] * 3
    status, body = call(base + "/predict", b'[{"x": {"a": 1}}, {"y": 1}]', token="s3cret")
    assert status == 400 and json.loads(body) == {"reason": "missing_x", "error": "no 'x' field", "index": 1}
    assert json.loads(call(base + "/predict", b"[1", token="s3cret")[1])["reason"] == "invalid_json"
    many = b"[" + b",".join([b'{"x": {}}'] * (MAX_EVENTS + 1)) + b"]"
    assert json.loads(call(base + "/predict", many, token="s3cret")[1])["reason"] == "too_large"
    huge = http.client.HTTPConnection("127.0.0.1", int(base.rsplit(":", 1)[1]), timeout=10)
    huge.putrequest("POST", "/predict")  # the headers alone: the server answers without reading on
    huge.putheader("Content-Length", str(5_000_000))
    huge.putheader("Authorization", "Bearer s3cret")
    huge.endheaders()
    answer = huge.getresponse()
    assert answer.status == 413 and json.loads(answer.read())["reason"] == "too_large"
    assert call(base + "/metrics")[0] == 200


def test_a_learners_server_has_no_predictions_and_a_failing_route_is_a_500_not_a_dead_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    board = Board("m", "learn")
    with HttpServer(board, Exposition(board), host="127.0.0.1", port=0) as server:
        base = f"http://127.0.0.1:{server.port}"
        assert call(base + "/predict", b"{}")[0] == 404

        def broken(*_: Any) -> Any:
            raise RuntimeError("a bug")

        monkeypatch.setattr(server, "status", broken)
        assert call(base + "/api/status")[0] == 500
        assert call(base + "/healthz")[0] == 200


def test_connections_beyond_the_cap_are_refused_and_served_again_once_others_close(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(server_module, "MAX_CONNECTIONS", 4)
    board = Board("m", "learn")
    with HttpServer(board, Exposition(board), host="127.0.0.1", port=0) as server:
        idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(4)]
        try:
            refused = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            refused.request("GET", "/healthz")
            assert refused.getresponse().status == 503
        finally:
            for s in idle:
                s.close()

        deadline = time.monotonic() + 10
        while call(f"http://127.0.0.1:{server.port}/healthz")[0] != 200:  # a 503 while slots free up
            assert time.monotonic() < deadline, "no connection slot came free"
            time.sleep(0.05)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.one_of(
    JSON.map(lambda v: orjson.dumps(v, option=orjson.OPT_NON_STR_KEYS) if _dumpable(v) else b"null"),
    st.dictionaries(st.sampled_from(["id", "x", "y", "key", "ts"]), JSON, max_size=5).map(
        lambda d: json.dumps(d, allow_nan=True).encode()),
    st.binary(max_size=64),
))
def test_any_body_gets_a_prediction_or_a_400_with_a_reason(body: bytes) -> None:
    engine = trained_once()
    status, answer = HttpPredict("m", FieldNames(), Limits(), lambda: FrozenModel(engine, 1))(body)
    doc = orjson.loads(answer)
    assert status in (200, 400), answer
    if status == 400:
        assert isinstance(doc["reason"], str) and doc["reason"]


def _dumpable(value: Any) -> bool:
    try:
        orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return False
    return True


_ENGINE: list[Engine] = []


def trained_once() -> Engine:
    if not _ENGINE:
        _ENGINE.append(trained())
    return _ENGINE[0]
