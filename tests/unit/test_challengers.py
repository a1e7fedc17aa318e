"""Challengers: models learning from the champion's events beside it, in its state."""

from __future__ import annotations

import json
import pickle
from dataclasses import replace
from typing import Any

import pytest
from river import datasets, evaluate, metrics, stream

from consumers.replay import ReplayGuard
from consumers.resume import configure
from stream_learner.checkpoint import CheckpointMeta, described
from stream_learner.config import Settings
from stream_learner.engine import Engine, ModelState
from stream_learner.errors import ConfigError
from stream_learner.events import Event, LateLabel, Source
from stream_learner.models import build_model
from stream_learner.pending import PendingLabels

CHAMPION = "preprocessing.StandardScaler() | linear_model.LogisticRegression()"
CHALLENGERS = {"tree": "tree.HoeffdingTreeClassifier(grace_period=50)",
               "slow": "preprocessing.StandardScaler() | linear_model.LogisticRegression(optim.SGD(0.005))"}
ORACLE_METRICS = (metrics.Accuracy, metrics.LogLoss, metrics.F1)


def settings(**challengers: str) -> Settings:
    return Settings(challengers=tuple(f"{name}={spec}" for name, spec in challengers.items()))


def lineup(**challengers: str) -> ModelState:
    state = ModelState.fresh(CHAMPION)
    configure(state, settings(**challengers))
    return state


def phishing() -> list[Event]:
    return [Event(f"e-{i}", None, None, x, y, Source("t", 0, i))
            for i, (x, y) in enumerate(datasets.Phishing())]


def oracle(spec: str, metric: type[metrics.base.Metric], delay: int | None = None) -> float:
    expected = metric()
    evaluate.progressive_val_score(dataset=datasets.Phishing(), model=build_model(spec), metric=expected,
                                   delay=delay)
    return float(expected.get())


def figures(state: ModelState) -> list[float]:
    return [m.get() for m in state.metrics.cumulative]


def test_each_challenger_equals_progressive_val_score_of_its_spec() -> None:
    state = lineup(**CHALLENGERS)
    engine = Engine(state)
    named = set()
    for event in phishing():
        prediction = engine.predict(event)
        for name, shadow in engine.learn(prediction):
            named.add(name)
            assert shadow.event is event
    assert named == set(CHALLENGERS)
    for name, spec in {"champion": CHAMPION, **CHALLENGERS}.items():
        mine = state if name == "champion" else state.challengers[name]
        assert figures(mine) == [oracle(spec, m) for m in ORACLE_METRICS], name
        assert mine.learned == 1250


def test_challengers_change_nothing_of_the_champion() -> None:
    alone, beside = ModelState.fresh(CHAMPION), lineup(**CHALLENGERS)
    solo, crowd = Engine(alone), Engine(beside)
    for event in phishing():
        assert solo.process(event) == crowd.process(event)
    assert pickle.dumps(alone.model) == pickle.dumps(beside.model)
    assert (alone.learned, alone.digest) == (beside.learned, beside.digest)
    assert all(c.digest == alone.digest for c in beside.challengers.values())  # the same events


@pytest.mark.parametrize("delay", [1, 40])
def test_with_late_labels_each_challenger_equals_progressive_val_score_with_delay(delay: int) -> None:
    state = lineup(**CHALLENGERS)
    configure(state, replace(settings(**CHALLENGERS), labels_topic="labels", label_ttl=1e9))
    engine = Engine(state)
    for seq, (i, x, y) in enumerate(stream.simulate_qa(datasets.Phishing(), moment=None, delay=delay)):
        if y is None:
            engine.process(Event(str(i), None, float(seq), x, None, Source("events", 0, seq)))
        else:
            assert engine.label(LateLabel(str(i), y, float(seq), Source("labels", 0, seq)))
    for name, spec in CHALLENGERS.items():
        challenger = state.challengers[name]
        assert isinstance(challenger.pending, PendingLabels)
        assert figures(challenger) == [oracle(spec, m, delay) for m in ORACLE_METRICS], name


class Fails:
    """Wraps a model and raises on its ``n``-th learn."""

    def __init__(self, model: Any, n: int) -> None:
        self.model, self.n = model, n

    def __getattr__(self, name: str) -> Any:
        if name == "model":  # not set yet, as while unpickling
            raise AttributeError(name)
        return getattr(self.model, name)

    def learn_one(self, x: dict[str, Any], y: Any) -> None:
        self.n -= 1
        if self.n == 0:
            raise ValueError("no more")
        self.model.learn_one(x, y)


def test_a_challenger_that_raises_stops_learning_and_the_champion_goes_on() -> None:
    state = lineup(tree=CHALLENGERS["tree"])
    state.challengers["tree"].model = Fails(state.challengers["tree"].model, n=100)
    engine = Engine(state)
    counts = [len(engine.learn(engine.predict(e))) for e in phishing()]
    assert counts == [1] * 99 + [0] * 1151  # the 100th event raised: no shadow from it on
    tree = state.challengers["tree"]
    assert tree.learned == 99 and "learn failed: ValueError: no more" in tree.error
    assert state.learned == 1250 and figures(state) == [oracle(CHAMPION, m) for m in ORACLE_METRICS]
    header = described(CheckpointMeta("m", 1, {}), state, "k1").challengers["tree"]
    assert header["learned"] == 99 and header["error"] == tree.error
    assert Engine(pickle.loads(pickle.dumps(state))).challengers == {}  # stopped across a restart too


def test_the_header_names_each_challenger_with_its_figures() -> None:
    state = lineup(**CHALLENGERS)
    engine = Engine(state)
    for event in phishing()[:300]:
        engine.process(event)
    header = described(CheckpointMeta("m", 1, {}), state, "k1").challengers
    assert sorted(header) == sorted(CHALLENGERS)
    for name, spec in CHALLENGERS.items():
        c = state.challengers[name]
        assert header[name] == {"spec": spec, "learned": 300, "learned_digest": c.digest,
                                "metrics": c.metrics.report(), "error": ""}


def test_configure_adds_new_challengers_drops_old_ones_and_refuses_a_changed_spec() -> None:
    state = lineup(tree=CHALLENGERS["tree"])
    engine = Engine(state)
    for event in phishing()[:50]:
        engine.process(event)
    configure(state, settings(tree=CHALLENGERS["tree"], slow=CHALLENGERS["slow"]))
    assert state.challengers["tree"].learned == 50 and state.challengers["slow"].learned == 0
    configure(state, settings(slow=CHALLENGERS["slow"]))
    assert list(state.challengers) == ["slow"]
    with pytest.raises(ConfigError, match="--challenger slow: it learned with"):
        configure(state, settings(slow="tree.HoeffdingTreeClassifier()"))


def test_a_state_pickled_without_challengers_restores_with_none() -> None:
    state = ModelState.fresh(CHAMPION)
    old = pickle.loads(pickle.dumps(state))
    del old.__dict__["challengers"], old.__dict__["error"]
    restored = pickle.loads(pickle.dumps(old))
    assert restored.challengers == {} and restored.error == "" and Engine(restored).challengers == {}


@pytest.mark.parametrize(("value", "message"), [
    (["a"], "expected NAME=SPEC"),
    (["a=x", "a=y"], "'a' is given twice"),
    (["champion=x"], "the champion's"),
    (["bad name=x"], "expected NAME=SPEC"),
    ("not json", "expected a JSON list"),
    ([1], "expected a list of strings"),
])
def test_bad_challenger_settings_are_refused_naming_their_source(value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        Settings.load(flags={"challengers": value}, env={})
    assert str(info.value).startswith("--challenger: ")
    env = {"STREAM_LEARNER_CHALLENGERS": value if isinstance(value, str) else json.dumps(value)}
    with pytest.raises(ConfigError, match="STREAM_LEARNER_CHALLENGERS: "):
        Settings.load(env=env)


def test_a_replay_resends_a_shadow_prediction_an_earlier_run_lost_and_nothing_it_sent() -> None:
    # The champion's prediction reached its topic before the crash, the challenger's did not.
    guard = ReplayGuard()
    tp = ("events", 0)
    guard.recover({("events", 0, 5, "champion"), ("events", 0, 6, "champion"), ("events", 0, 6, "slow")})
    assert guard.sent(tp, ("events", 0, 5)) and not guard.shadow_sent(tp, ("events", 0, 5), "slow")
    assert guard.sent(tp, ("events", 0, 6)) and guard.shadow_sent(tp, ("events", 0, 6), "slow")
    assert not guard.shadow_sent(tp, ("events", 0, 6), "other")
    assert guard.ahead_of({tp: 6}) and not guard.ahead_of({tp: 7})
    guard.covered({tp: 7})
    assert not guard.recovered and not guard.shadows
