"""A model spec is code: only River's classes and functions may be reached and called."""

from __future__ import annotations

import types
from collections import deque
from pathlib import Path
from typing import Any

import pytest

from stream_learner.errors import ModelSpecError
from stream_learner.models import build_model, river_module_allowed, river_modules

WRAP = "preprocessing.StandardScaler() | linear_model.LogisticRegression(l2={})"


@pytest.mark.parametrize("escape", [
    "utils.pandas.importlib.import_module('os').system('touch {marker}')",
    "base.base.sys.modules.get('os').system('touch {marker}')",
    "utils.pandas.import_pandas()",
    "linear_model.LogisticRegression().__class__",
    "linear_model.LogisticRegression().learn_one({{}}, True)",
    "(linear_model.LogisticRegression()).weights",
    "optim",
    "[optim.losses][0]",
    "compose.Pipeline.steps",
    "datasets.Phishing()",
    "bandit.datasets.NewsArticles()",
    "stream.iter_csv('/etc/passwd')",
    "print('x')",
    "linear_model.LogisticRegression(**{{'l2': 1}})",
    "linear_model.LogisticRegression(*[1])",
    "lambda: 1",
    "'a' * 10",
])
def test_escapes_are_refused_before_anything_runs(escape: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for spec in (escape.format(marker=marker), WRAP.format(escape.format(marker=marker))):
        with pytest.raises(ModelSpecError):
            build_model(spec)
    assert not marker.exists()


def module_paths(max_depth: int = 4) -> tuple[list[str], list[str]]:
    """Every attribute path from River's spec names (through modules and classes, public
    attributes only) whose value is a module: (River model modules, every other one)."""
    allowed: list[str] = []
    other: list[str] = []
    queue: deque[tuple[str, Any, int]] = deque((name, m, 1) for name, m in river_modules().items())
    seen: set[int] = set()
    while queue:
        path, obj, depth = queue.popleft()
        if id(obj) in seen or depth > max_depth:
            continue
        seen.add(id(obj))
        for attr in dir(obj):
            if attr.startswith("_"):
                continue
            try:
                value = getattr(obj, attr)
            except Exception:
                continue
            child = f"{path}.{attr}"
            if isinstance(value, types.ModuleType):
                genuine = (isinstance(obj, types.ModuleType) and value.__name__ == f"{obj.__name__}.{attr}"
                           and river_module_allowed(value.__name__))
                (allowed if genuine else other).append(child)
                if genuine:
                    queue.append((child, value, depth + 1))
            elif isinstance(value, type) and isinstance(obj, types.ModuleType):
                queue.append((child, value, depth + 1))
    return allowed, other


def test_every_module_reachable_from_rivers_namespace_is_refused_as_a_value_or_a_way_out() -> None:
    allowed, other = module_paths()
    assert len(other) > 50, "the walk should find River's imports (numpy, math, importlib, ...)"
    assert "utils.pandas" in other and any(p.endswith(".np") for p in other)
    for path in other:
        for spec in (f"{path}.x()", WRAP.format(path), WRAP.format(f"{path}.x")):
            with pytest.raises(ModelSpecError):
                build_model(spec)
    assert "optim.losses" in allowed
    for path in allowed:
        with pytest.raises(ModelSpecError, match="not a value"):
            build_model(WRAP.format(path))


@pytest.mark.parametrize("spec", [
    "preprocessing.StandardScaler() | linear_model.LogisticRegression()",
    "linear_model.LogisticRegression(optimizer=optim.SGD(0.1), loss=optim.losses.Log(), l2=-0.0)",
    "compose.Pipeline(preprocessing.StandardScaler(), linear_model.PAClassifier(C=0.01, mode=1))",
    "(preprocessing.StandardScaler() + preprocessing.MinMaxScaler()) | tree.HoeffdingTreeClassifier()",
    "ensemble.BaggingClassifier(model=linear_model.LogisticRegression(), n_models=3, seed=1)",
    "forest.ARFClassifier(n_models=3, seed=1, max_features='sqrt')",
    "preprocessing.FeatureHasher(n_features=10) | linear_model.LinearRegression(intercept_lr=.1)",
    "compose.FuncTransformer(utils.math.sigmoid) | linear_model.LinearRegression()",
])
def test_specs_people_write_still_build(spec: str) -> None:
    build_model(spec)


def test_a_spec_river_accepts_but_that_fails_on_a_first_event_is_refused_before_any_io() -> None:
    from stream_learner.models import check_spec

    with pytest.raises(ModelSpecError, match=r"fails on a first event: TypeError"):
        check_spec("linear_model.LogisticRegression(l2='a lot')")
    check_spec("feature_extraction.BagOfWords(on='text') | naive_bayes.MultinomialNB()")  # wants 'text'
    check_spec("preprocessing.StandardScaler() | linear_model.LinearRegression()")


def test_the_default_model_learns_numbers_and_strings_as_rivers_own_pipeline_would() -> None:
    from river import compose, datasets, linear_model, preprocessing

    from stream_learner.config import DEFAULT_SPEC

    ours = build_model(DEFAULT_SPEC)
    oracle = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    for x, y in list(datasets.Phishing())[:300]:  # numbers only: the same as scaling them all
        assert ours.predict_proba_one(x) == oracle.predict_proba_one(x)
        ours.learn_one(x, y)
        oracle.learn_one(x, y)
    mixed = {"amount": 12.5, "country": "FR"}
    ours.learn_one(mixed, True)
    hand = ((compose.SelectType(int, float) | preprocessing.StandardScaler())
            + (compose.SelectType(str) | preprocessing.OneHotEncoder()))
    assert set(hand.transform_one(mixed)) == {"amount", "country_FR"}
    assert "country_FR" in ours["LogisticRegression"].weights
