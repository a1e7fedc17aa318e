"""Property-based: whatever bytes arrive, the decoder either returns a clean event or raises
``InvalidEvent`` with a reason, and nothing that gets through can poison a model."""

from __future__ import annotations

import json
import math
from typing import Any
from unittest import mock

import orjson
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from stream_learner.engine import Engine, ModelState
from stream_learner.errors import InvalidEvent
from stream_learner.events import FieldNames, Limits, Source, decode_event

SRC = Source("events", 0, 0, 0)
REASONS = {"too_large", "out_of_range", "not_utf8", "invalid_json", "too_deep", "not_object", "missing_x",
           "x_not_object", "bad_feature", "non_finite", "bad_label", "bad_field", "new_class",
           "model_error", "too_long", "too_many_features"}

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) \
    | st.text(max_size=20)
json_values = st.recursive(json_scalars, lambda kids: st.lists(kids, max_size=4)
                           | st.dictionaries(st.text(max_size=8), kids, max_size=4), max_leaves=20)
events = st.fixed_dictionaries(
    {}, optional={"x": st.dictionaries(st.text(max_size=12), json_values, max_size=6) | json_values,
                  "y": json_values, "id": json_values, "key": json_values, "ts": json_values})


def encode(doc: Any) -> bytes:
    return json.dumps(doc, allow_nan=True).encode()  # NaN/Infinity literals on purpose


def check_clean(raw: bytes, task: str) -> None:
    try:
        event = decode_event(raw, SRC, FieldNames(), task, Limits(max_bytes=64 * 1024))
    except InvalidEvent as exc:
        assert exc.reason in REASONS
        return
    for value in event.x.values():
        assert isinstance(value, str | int | float)
        assert not isinstance(value, float) or math.isfinite(value)
    if task == "regression" and event.y is not None:
        assert isinstance(event.y, float) and math.isfinite(event.y)


@given(st.binary(max_size=2000))
def test_arbitrary_bytes(raw: bytes) -> None:
    for task in ("binary", "multiclass", "regression"):
        check_clean(raw, task)


@given(events)
def test_arbitrary_json_events(doc: dict[str, Any]) -> None:
    for task in ("binary", "multiclass", "regression"):
        check_clean(encode(doc), task)


@given(st.integers(min_value=1, max_value=50_000), st.sampled_from([b"[", b'{"x":']))
def test_deep_nesting(depth: int, opener: bytes) -> None:
    check_clean(opener * depth, "binary")


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(events, min_size=1, max_size=40))
def test_no_hostile_stream_puts_nan_into_a_linear_model(docs: list[dict[str, Any]]) -> None:
    state = ModelState.fresh("preprocessing.StandardScaler() | linear_model.LinearRegression()")
    engine = Engine(state)
    good = {"x": {"a": 1.0, "b": 2.0}, "y": 3.0}
    for doc in [good, *docs, good]:
        try:
            engine.process(decode_event(encode(doc), SRC, FieldNames(), "regression"))
        except InvalidEvent as exc:
            assert exc.reason in REASONS
    lin = state.model["LinearRegression"]
    assert all(math.isfinite(w) for w in lin.weights.values()) and math.isfinite(lin.intercept)


@given(st.floats(min_value=1e15, exclude_min=True, allow_infinity=False) | st.integers(min_value=10**15 + 1))
def test_finite_but_huge_numbers_are_out_of_range(value: float) -> None:
    for raw in (encode({"x": {"a": value}}), encode({"x": {"a": -value}}), encode({"x": {}, "y": value})):
        try:
            decode_event(raw, SRC, FieldNames(), "regression")
        except InvalidEvent as exc:
            assert exc.reason == "out_of_range"
        else:
            raise AssertionError(f"{raw!r} was accepted")




def typed(value: Any) -> Any:
    """A value with the type of every scalar, since True == 1 == 1.0 in Python."""
    if isinstance(value, dict):
        return {k: typed(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [typed(v) for v in value]
    return (type(value), value)


def outcome(raw: bytes, task: str, max_abs: float) -> Any:
    try:
        e = decode_event(raw, SRC, FieldNames(), task, Limits(max_bytes=64 * 1024, max_abs=max_abs))
    except InvalidEvent as exc:
        return exc.reason, str(exc)
    return typed((e.id, e.key, e.ts, e.x, e.y))


def refused(_raw: bytes) -> Any:
    raise orjson.JSONDecodeError("refused", "", 0)


@given(events, st.sampled_from(["binary", "multiclass", "regression"]), st.sampled_from([1e15, 1e18]))
@example({"x": {"a": 1.0}, "id": 2**127 + 1, "y": 10**20}, "multiclass", 1e15)
@example({"x": {"a": 2**70}, "y": -(2**70)}, "regression", 1e18)
def test_the_fast_json_path_decodes_what_the_standard_library_decodes(
        doc: dict[str, Any], task: str, max_abs: float) -> None:
    raw = encode(doc)
    fast = outcome(raw, task, max_abs)
    with mock.patch.object(orjson, "loads", refused):  # every message read by the stdlib
        strict = outcome(raw, task, max_abs)
    assert fast == strict
