"""Drift alerts against River's own detector fed the same error stream in-process."""

from __future__ import annotations

from typing import Any

import pytest
from river import datasets, drift

from consumers.resume import configure
from stream_learner.checkpoint import CheckpointMeta, open_record, sealed
from stream_learner.config import Settings
from stream_learner.drift import build_detector
from stream_learner.engine import Engine, ModelState
from stream_learner.errors import ModelSpecError
from stream_learner.events import Event, Source
from stream_learner.models import build_model

SPEC = "preprocessing.StandardScaler() | linear_model.LogisticRegression()"
REGRESSOR = "preprocessing.StandardScaler() | linear_model.LinearRegression()"


def flipped() -> list[Event]:
    """Phishing, its labels flipped from the middle on: an abrupt change of concept."""
    rows = list(datasets.Phishing())
    return [Event(f"e-{i}", None, None, x, y if i < len(rows) // 2 else not y, Source("t", 0, i))
            for i, (x, y) in enumerate(rows)]


def shifted() -> list[Event]:
    """TrumpApproval, its target raised by 20 from the middle on."""
    rows = list(datasets.TrumpApproval())
    return [Event(f"e-{i}", None, None, x, y + (20.0 if i >= len(rows) // 2 else 0.0), Source("t", 0, i))
            for i, (x, y) in enumerate(rows)]


def oracle(spec: str, detector: Any, events: list[Event], regression: bool = False) -> list[str]:
    """Where ``detector``, fed the errors of ``spec``'s prequential predictions, fires."""
    model, fired = build_model(spec), []
    for e in events:
        y_pred = model.predict_one(e.x)
        if y_pred is not None and (regression or model.predict_proba_one(e.x)):
            detector.update(abs(e.y - y_pred) if regression else float(y_pred != e.y))
            if detector.drift_detected:
                fired.append(e.id)
        model.learn_one(e.x, e.y)
    return fired


def watched(spec: str, detector: str, **extra: Any) -> tuple[ModelState, Engine]:
    state = ModelState.fresh(spec)
    configure(state, Settings(model_spec=spec, drift_detector=detector, **extra))
    return state, Engine(state)


def alerts_of(engine: Engine, events: list[Event]) -> list[Any]:
    out = []
    for e in events:
        engine.process(e)
        out.extend(engine.alerts)
        engine.alerts.clear()
    return out


@pytest.mark.parametrize("detector", ["drift.ADWIN()", "drift.binary.DDM()", "drift.PageHinkley()"])
def test_alerts_fire_at_the_events_where_rivers_detector_fires(detector: str) -> None:
    events = flipped()
    _, engine = watched(SPEC, detector)
    fired = [a.drift.event_id for a in alerts_of(engine, events)]
    assert fired == oracle(SPEC, build_detector(detector, "binary"), events)
    half = len(events) // 2
    assert any(half <= int(i[2:]) < half + 200 for i in fired), "it sees the flip"


def test_a_regressors_error_is_its_absolute_error() -> None:
    events = shifted()
    _, engine = watched(REGRESSOR, "drift.PageHinkley()")
    alerts = alerts_of(engine, events)
    expected = oracle(REGRESSOR, drift.PageHinkley(), events, regression=True)
    assert [a.drift.event_id for a in alerts] == expected
    half = len(events) // 2
    assert any(half <= a.source.offset < half + 50 for a in alerts), "it sees the shift"


def test_a_restored_checkpoint_fires_where_an_uninterrupted_run_does() -> None:
    events = flipped()
    _, whole = watched(SPEC, "drift.ADWIN()")
    expected = [a.drift.event_id for a in alerts_of(whole, events)]
    state, first = watched(SPEC, "drift.ADWIN()")
    got = [a.drift.event_id for a in alerts_of(first, events[:700])]
    record, _ = sealed(state, CheckpointMeta("m", 1, {}), "k1", b"key")
    restored = open_record(record, {"k1": b"key"}).state  # through the allow-list unpickler
    configure(restored, Settings(model_spec=SPEC, drift_detector="drift.ADWIN()"))
    got += [a.drift.event_id for a in alerts_of(Engine(restored), events[700:])]
    assert got == expected


def test_on_drift_a_fresh_challenger_of_the_champions_spec_starts_there() -> None:
    events = flipped()
    state, engine = watched(SPEC, "drift.ADWIN()", on_drift="start-challenger")
    alerts = alerts_of(engine, events)
    assert alerts and all(a.challenger == f"drift-{a.learned}" for a in alerts)
    last = alerts[-1]
    assert list(state.challengers) == [last.challenger]  # one at a time: the newest drift's
    start = int(last.drift.event_id[2:])
    fresh = build_model(SPEC)
    for e in events[start:]:  # from the event it fired at on
        fresh.learn_one(e.x, e.y)
    challenger = state.challengers[last.challenger]
    assert challenger.model["LogisticRegression"].weights == fresh["LogisticRegression"].weights
    assert challenger.learned == len(events) - start and challenger.started_by == "drift"
    configure(state, Settings(model_spec=SPEC, drift_detector="drift.ADWIN()", on_drift="start-challenger"))
    assert last.challenger in state.challengers  # a restart keeps it
    configure(state, Settings(model_spec=SPEC))
    assert not state.challengers and state.drift is None


@pytest.mark.parametrize(("spec", "task", "message"), [
    ("linear_model.LogisticRegression()", "binary", "not a River drift detector"),
    ("drift.binary.DDM()", "regression", "watches 0/1 errors"),
    ("os.system('x')", "binary", "--drift-detector: "),
])
def test_a_wrong_detector_is_refused_naming_the_flag(spec: str, task: str, message: str) -> None:
    with pytest.raises(ModelSpecError, match=message):
        build_detector(spec, task)
