"""The engine alone, against River's own prequential evaluation."""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterable
from typing import Any

import pytest
from river import datasets, evaluate, linear_model, metrics, preprocessing, tree, utils

from stream_learner.engine import Engine, ModelState
from stream_learner.errors import InvalidEvent, ModelSpecError
from stream_learner.events import Event, Source, encode_prediction
from stream_learner.models import build_model, infer_task


def events(dataset: Iterable[tuple[dict[str, Any], Any]], labelled: bool = True) -> list[Event]:
    return [Event(f"e-{i}", None, None, x, y if labelled else None, Source("t", 0, i))
            for i, (x, y) in enumerate(dataset)]


@pytest.mark.parametrize(("spec", "dataset", "oracle_model", "oracle_metric"), [
    ("preprocessing.StandardScaler() | linear_model.LogisticRegression()", datasets.Phishing(),
     lambda: preprocessing.StandardScaler() | linear_model.LogisticRegression(), metrics.Accuracy),
    ("tree.HoeffdingTreeClassifier()", datasets.ImageSegments(),
     tree.HoeffdingTreeClassifier, metrics.Accuracy),
    ("preprocessing.StandardScaler() | linear_model.LinearRegression()", datasets.TrumpApproval(),
     lambda: preprocessing.StandardScaler() | linear_model.LinearRegression(), metrics.MAE),
])
def test_prequential_metric_equals_progressive_val_score(spec, dataset, oracle_model, oracle_metric):  # type: ignore[no-untyped-def]
    state = ModelState.fresh(spec)
    engine = Engine(state)
    for event in events(dataset):
        engine.process(event)
    expected = oracle_metric()
    evaluate.progressive_val_score(dataset=dataset, model=oracle_model(), metric=expected)
    mine = next(m for m in state.metrics.cumulative if type(m) is oracle_metric)
    assert mine.get() == expected.get()
    assert state.learned == len(list(dataset))


@pytest.mark.parametrize(("spec", "dataset"), [
    ("preprocessing.StandardScaler() | linear_model.LogisticRegression()", datasets.Phishing()),
    ("tree.HoeffdingTreeClassifier()", datasets.ImageSegments()),
    ("preprocessing.StandardScaler() | linear_model.LinearRegression()", datasets.TrumpApproval()),
])
def test_rolling_metrics_equal_rivers_rolling(spec: str, dataset: Any) -> None:
    state = ModelState.fresh(spec, window=100)
    engine = Engine(state)
    oracle_model = build_model(spec)
    oracles = [utils.Rolling(type(m), window_size=100) for m in state.metrics.cumulative]
    for event in events(dataset):
        engine.process(event)
        if state.task == "regression":
            y_pred, proba = oracle_model.predict_one(event.x), None
        else:
            proba = oracle_model.predict_proba_one(event.x)
            y_pred = max(proba, key=proba.__getitem__) if proba else None
        if y_pred is not None and (proba is None or proba):
            for oracle in oracles:
                wants_proba = proba is not None and not oracle.obj.requires_labels
                oracle.update(event.y, proba if wants_proba else y_pred)
        oracle_model.learn_one(event.x, event.y)
    report = state.metrics.report(digits=9)
    for oracle in oracles:
        assert report[f"{type(oracle.obj).__name__}@100"] == pytest.approx(oracle.get(), rel=1e-9, abs=1e-9)


def test_frozen_engine_never_learns() -> None:
    rows = list(datasets.Phishing())
    state = ModelState.fresh("preprocessing.StandardScaler() | linear_model.LogisticRegression()")
    trainer = Engine(state)
    for event in events(rows[:100]):
        trainer.process(event)

    engine = Engine(state, learn=False)
    before = pickle.dumps(state)
    outputs = [engine.process(e) for e in events(rows[100:])]
    assert pickle.dumps(state) == before
    assert {o.learned for o in outputs} == {100} and all(o.proba for o in outputs)


def test_a_third_class_is_refused_by_a_binary_model() -> None:
    state = ModelState.fresh("linear_model.LogisticRegression()")
    engine = Engine(state)
    for y in (True, False, True):
        engine.process(Event("e", None, None, {"a": 1.0}, y, Source("t", 0, 0)))
    with pytest.raises(InvalidEvent, match="new_class"):
        engine.process(Event("e", None, None, {"a": 1.0}, "maybe", Source("t", 0, 0)))
    assert state.learned == 3


def test_model_errors_become_dead_letters() -> None:
    state = ModelState.fresh("linear_model.LinearRegression()")
    engine = Engine(state)
    with pytest.raises(InvalidEvent) as info:
        engine.process(Event("e", None, None, {"a": "text"}, 1.0, Source("t", 0, 0)))
    assert info.value.reason == "model_error"


@pytest.mark.parametrize(("spec", "message"), [
    ("linear_model.Nope()", "failed: AttributeError"),
    ("__import__('os')", "not a River module"),
    ("linear_model.LogisticRegression().__class__", "private attribute"),
    ("[x for x in ()]", "ListComp is not allowed"),
    ("linear_model.LogisticRegression(", "not a Python expression"),
    ("preprocessing.StandardScaler()", "neither a classifier nor a regressor"),
    ("nowhere.module:factory", "cannot import"),
    ("os:getcwd", "not a River model"),
])
def test_wrong_specs_fail_clearly(spec: str, message: str) -> None:
    with pytest.raises(ModelSpecError, match=message):
        build_model(spec)


def test_task_inference() -> None:
    assert infer_task(build_model("tree.HoeffdingTreeClassifier()")) == "multiclass"
    assert infer_task(build_model("linear_model.LinearRegression()")) == "regression"
    assert infer_task(build_model("tree.HoeffdingTreeClassifier()"), "binary") == "binary"
    with pytest.raises(ModelSpecError, match="--task"):
        infer_task(build_model("linear_model.LogisticRegression()"), "regression")


def test_factory_specs_build_custom_models() -> None:
    model = build_model("tests.unit.factories:scaled_logreg")
    assert infer_task(model) == "binary"


def test_a_frozen_model_is_byte_identical_after_100k_events_with_unseen_features() -> None:
    rows = list(datasets.Phishing())
    state = ModelState.fresh("preprocessing.StandardScaler() | linear_model.LogisticRegression()")
    learner = Engine(state)
    for event in events(rows):
        learner.process(event)
    frozen = Engine(pickle.loads(pickle.dumps(state)), learn=False)
    before = pickle.dumps(frozen.state)
    for i in range(100_000):
        x, _ = rows[i % len(rows)]
        frozen.process(Event(f"u-{i}", None, None, {**x, f"new-{i}": 1.0, "city": f"c{i}"}, None,
                             Source("t", 0, i)))
    assert pickle.dumps(frozen.state) == before
    # It predicts as the learner's model does on what that model knows.
    x, _ = rows[0]
    seen = frozen.predict(Event("u", None, None, {**x, "new-0": 1.0}, None, Source("t", 0, 0)))
    assert seen.proba == learner.predict(Event("u", None, None, x, None, Source("t", 0, 0))).proba


def test_the_feature_budget_bounds_what_a_model_grows_by() -> None:
    state = ModelState.fresh("preprocessing.StandardScaler() | linear_model.LogisticRegression()",
                             max_features=12)
    engine = Engine(state)
    rows = list(datasets.Phishing())[:200]
    for i, (x, y) in enumerate(rows):
        engine.process(Event(f"e-{i}", None, None, {**x, f"new-{i}": 1.0}, y, Source("t", 0, i)))
    assert state.features.known_features == 12
    assert state.features.refused == 200 - (12 - len(rows[0][0]))
    assert len(state.model["LogisticRegression"].weights) <= 12


def test_a_multiclass_model_learns_at_most_max_classes() -> None:
    state = ModelState.fresh("tree.HoeffdingTreeClassifier()")
    engine = Engine(state, max_classes=3)
    for i in range(3):
        engine.process(Event(f"e-{i}", None, None, {"a": 1.0}, f"class-{i}", Source("t", 0, i)))
    with pytest.raises(InvalidEvent) as info:
        engine.process(Event("e-3", None, None, {"a": 1.0}, "class-3", Source("t", 0, 3)))
    assert info.value.reason == "new_class"
    assert state.classes == ["class-0", "class-1", "class-2"]


def test_the_largest_prediction_a_multiclass_model_can_make_fits_kafkas_default_limit() -> None:
    from stream_learner.events import MAX_LABEL_CHARS

    state = ModelState.fresh("tree.HoeffdingTreeClassifier()")
    engine = Engine(state)
    worst = "\u0001" * MAX_LABEL_CHARS  # each character escaped as \\u0001: 6 bytes
    for i in range(1000):
        label = f"{i}{worst}"[:MAX_LABEL_CHARS]
        engine.process(Event("i" * 1024, "k" * 1024, 1.0, {"a": float(i)}, label, Source("t", 0, i)))
    made = engine.process(Event("i" * 1024, "k" * 1024, 1.0, {"a": 1.0}, None, Source("t", 0, 1000)))
    prediction = encode_prediction(made, model="m" * 1024, version=2**63, mode="learn")
    assert len(json.loads(prediction)["proba"]) == 1000
    assert len(prediction) < 1_000_000
