"""Promotion: the policy's verdict against River's own metrics, the swap, and operators' requests."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from river import datasets, metrics

from consumers.resume import configure, load_latest
from consumers.steering import Steering
from stream_learner.checkpoint import CheckpointMeta, sealed
from stream_learner.config import Settings
from stream_learner.engine import Engine, ModelState
from stream_learner.errors import ConfigError
from stream_learner.events import Event, Source
from stream_learner.models import build_model
from stream_learner.observe.board import Board
from stream_learner.promotion import Policy, judge, origin_spec, promote
from stream_learner.requests import Request
from stream_learner.state.memory import MemoryStore

BAD = "preprocessing.StandardScaler() | linear_model.LogisticRegression(optimizer=optim.SGD(0.0005))"
GOOD = "preprocessing.StandardScaler() | linear_model.LogisticRegression()"
KEY = "k" * 32


def lineup(**extra: Any) -> tuple[ModelState, Settings]:
    settings = Settings(model_spec=BAD, challengers=(f"good={GOOD}",), hmac_key=KEY, **extra)
    state = ModelState.fresh(BAD)
    configure(state, settings)
    return state, settings


def phishing(n: int = 1250) -> list[Event]:
    return [Event(f"e-{i}", None, None, x, y, Source("t", 0, i))
            for i, (x, y) in enumerate(datasets.Phishing()) if i < n]


def run(state: ModelState, events: list[Event]) -> None:
    engine = Engine(state)
    for event in events:
        engine.process(event)


def windowed(spec: str, events: list[Event], last: int) -> float:
    """River's LogLoss of ``spec`` over the last ``last`` of its prequential predictions."""
    model, scored = build_model(spec), []
    for e in events:
        scored.append((e.y, model.predict_proba_one(e.x)))
        model.learn_one(e.x, e.y)
    metric = metrics.LogLoss()
    for y, proba in scored[-last:]:
        metric.update(y, proba)
    return float(metric.get())


def test_the_policy_compares_both_on_the_same_last_events_as_river_scores_them() -> None:
    state, _ = lineup()
    events = phishing(800)
    run(state, events)
    verdict = judge(state, Policy("LogLoss", margin=0.02, min_events=500, window=200))
    assert verdict is not None
    name, reason, figures = verdict
    champion, challenger = windowed(BAD, events, 200), windowed(GOOD, events, 200)
    assert name == "good" and figures["champion"] == pytest.approx(champion, rel=1e-12)
    assert figures["challenger"] == pytest.approx(challenger, rel=1e-12)
    assert figures["gain"] == pytest.approx((champion - challenger) / champion, rel=1e-9)
    assert "LogLoss over the last 200 labelled events" in reason


@pytest.mark.parametrize(("policy", "why"), [
    (Policy("LogLoss", margin=0.02, min_events=801, window=200), "too few events"),
    (Policy("LogLoss", margin=10.0, min_events=100, window=200), "not enough better"),
])
def test_the_policy_waits_for_enough_events_and_margin(policy: Policy, why: str) -> None:
    state, _ = lineup()
    run(state, phishing(800))
    assert judge(state, policy) is None, why


def test_a_worse_challenger_is_never_promoted() -> None:
    state = ModelState.fresh(GOOD)
    configure(state, Settings(model_spec=GOOD, challengers=(f"bad={BAD}",)))
    run(state, phishing(800))
    assert judge(state, Policy("LogLoss", margin=0.0, min_events=100, window=200)) is None
    assert judge(state, Policy("Accuracy", margin=0.0, min_events=100, window=200)) is None


def test_the_promoted_champion_is_the_challenger_as_it_learned_and_goes_on_learning() -> None:
    state, _ = lineup()
    events = phishing()
    run(state, events[:600])
    new = promote(state, "good", by="operator", reason="because", version=7, events=600)
    run(new, events[600:])
    oracle = build_model(GOOD)
    for e in events:
        oracle.learn_one(e.x, e.y)
    assert new.model["LogisticRegression"].weights == oracle["LogisticRegression"].weights
    assert new.spec == GOOD and new.learned == len(events) and not new.challengers
    entry = new.history[-1]
    assert (entry["by"], entry["version"], entry["events"], entry["former_spec"]) == ("operator", 7, 600, BAD)
    assert entry["learned"] == {"champion": 600, "challenger": 600}
    assert origin_spec(new) == BAD


def test_a_request_is_applied_once_and_a_bad_one_is_refused_and_recorded(caplog: Any) -> None:
    state, settings = lineup(audit_topic="audit")
    run(state, phishing(100))
    store, sent = MemoryStore(), []

    class Publisher:
        def send(self, topic: str, value: bytes, key: bytes | None = None) -> None:
            sent.append((topic, value))

    steer = Steering(settings, store, Publisher(), Board(settings.model, "learn"))  # type: ignore[arg-type]
    assert steer(state, version=2, events=100) is None  # no request
    store.request(settings.model, Request.new("promote", challenger="nobody").encode())
    assert steer(state, version=2, events=100) is None
    assert "cannot promote challenger 'nobody': no such challenger" in state.history[-1]["reason"]
    assert steer(state, version=3, events=100) is None and len(state.history) == 1  # refused once
    request = Request.new("promote", challenger="good", reason="ops said so")
    store.request(settings.model, request.encode())
    new = steer(state, version=4, events=100)
    assert new is not None and new.spec == GOOD and new.history[-1]["request"] == request.id
    assert steer(new, version=5, events=100) is None  # applied: not again
    assert [t for t, _ in sent] == ["audit", "audit"] and b'"action": "promote"' in sent[1][1]
    store.request(settings.model, b"not json")
    with caplog.at_level(logging.WARNING):
        assert steer(new, version=5, events=100) is None and steer(new, version=6, events=100) is None
    assert caplog.text.count("ignoring the operator's request") == 1


def test_after_a_promotion_a_restart_with_the_same_flags_resumes_it() -> None:
    state, settings = lineup()
    run(state, phishing(100))
    new = promote(state, "good", by="operator", reason="x", version=2, events=100)
    store = MemoryStore()
    token = store.acquire(settings.model, 10)
    assert token is not None
    record, _ = sealed(new, CheckpointMeta(settings.model, 1, {}), settings.hmac_key_id, KEY.encode())
    store.save(settings.model, 1, record, token, 5)
    resumed, _ = load_latest(settings, store)  # --model-spec is still BAD: the origin's
    configure(resumed, settings)
    assert resumed.spec == GOOD and not resumed.challengers  # good is not started again
    with pytest.raises(ConfigError, match="was trained with"):
        load_latest(Settings(model_spec="tree.HoeffdingTreeClassifier()", hmac_key=KEY), store)
