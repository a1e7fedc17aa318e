"""The event and prediction contracts (docs/contracts.md).

An event is one UTF-8 JSON object. Decoding is strict, because one NaN would poison a
linear model for good: anything suspicious raises ``InvalidEvent`` with a short reason
code, and the caller dead-letters the original bytes.

>>> src = Source("events", 0, 7, 1_700_000_000_000)
>>> e = decode_event(b'{"x": {"a": 1.5, "b": "FR", "c": null}, "y": true}', src, FieldNames(), "binary")
>>> e.id, e.x, e.y, e.ts
('events/0/7', {'a': 1.5, 'b': 'FR'}, True, 1700000000.0)
>>> decode_event(b'{"x": {"a": NaN}}', src, FieldNames(), "binary")
Traceback (most recent call last):
...
stream_learner.errors.InvalidEvent: non_finite: NaN is not a finite number
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from numbers import Real
from typing import Any

import orjson

from stream_learner.errors import InvalidEvent

Label = bool | int | float | str
MAX_ABS = 1e15  # default bound on |number|: squares and sums of squares stay far from overflow
Features = dict[str, float | int | str | bool]
_INT64 = 2.0**63


@dataclass(frozen=True, slots=True)
class FieldNames:
    """Names of the event's fields, all configurable."""

    id: str = "id"
    key: str = "key"
    ts: str = "ts"
    x: str = "x"
    y: str = "y"


# One Source and one Event per message: not frozen, since a frozen dataclass's __init__ sets
# each field through object.__setattr__, ~0.9 us more per message for the two
# (docs/performance.md, item 22).
@dataclass(slots=True)
class Source:
    """Where a message came from; Kafka timestamps are in milliseconds."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None = None

    def __str__(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


@dataclass(slots=True)
class Event:
    id: str
    key: str | None
    ts: float | None
    x: Features
    y: Label | None
    source: Source

    @property
    def labelled(self) -> bool:
        return self.y is not None


def _reject_constant(name: str) -> Any:
    raise InvalidEvent("non_finite", f"{name} is not a finite number")


def _finite(value: float, what: str) -> float:
    if not math.isfinite(value):
        raise InvalidEvent("non_finite", f"{what} is {value}")
    return value


def _in_range(value: float, what: str, max_abs: float) -> None:
    """Finite but huge numbers overflow a model's statistics (1e200 squared is inf)."""
    if isinstance(value, float):
        _finite(value, what)
    if abs(value) > max_abs:
        raise InvalidEvent("out_of_range", f"{what} is {value:.3g}, beyond the limit of {max_abs:g}")


def decode_event(raw: bytes, source: Source, fields: FieldNames, task: str,
                 max_bytes: int = 1024 * 1024, max_abs: float = MAX_ABS) -> Event:
    """Validate one message and return the event, or raise ``InvalidEvent``.

    ``null`` feature values mean "missing" and are dropped, as River expects.
    """
    doc = _exact(_object(raw, max_bytes), raw, fields)
    if fields.x not in doc:
        raise InvalidEvent("missing_x", f"no {fields.x!r} field")
    x = _features(doc[fields.x], fields.x, max_abs)
    y = check_label(doc.get(fields.y), task, max_abs)
    event_id = doc.get(fields.id)
    if event_id is None:
        event_id = str(source)
    elif not isinstance(event_id, str | int) or isinstance(event_id, bool):
        raise InvalidEvent("bad_field", f"{fields.id!r} must be a string or an integer")
    key = doc.get(fields.key)
    if key is not None and not isinstance(key, str):
        raise InvalidEvent("bad_field", f"{fields.key!r} must be a string")
    ts = doc.get(fields.ts)
    if ts is None:
        ts = None if source.timestamp_ms is None else source.timestamp_ms / 1000
    elif isinstance(ts, bool) or not isinstance(ts, int | float):
        raise InvalidEvent("bad_field", f"{fields.ts!r} must be a number of seconds")
    else:
        ts = _finite(float(ts), fields.ts)
    return Event(str(event_id), key, ts, x, y, source)


@dataclass(frozen=True, slots=True)
class LateLabel:
    """A label for an event predicted earlier, from the labels topic."""

    id: str
    y: Label
    ts: float | None
    source: Source


def decode_label(raw: bytes, source: Source, fields: FieldNames, task: str,
                 max_bytes: int = 1024 * 1024, max_abs: float = MAX_ABS) -> LateLabel:
    """A labels-topic message ``{"id": ..., "y": ...}``, validated like an event's label."""
    doc = _exact(_object(raw, max_bytes), raw, fields)
    event_id = doc.get(fields.id)
    if event_id is None:
        raise InvalidEvent("missing_id", f"a label needs {fields.id!r}")
    if not isinstance(event_id, str | int) or isinstance(event_id, bool):
        raise InvalidEvent("bad_field", f"{fields.id!r} must be a string or an integer")
    y = check_label(doc.get(fields.y), task, max_abs)
    if y is None:
        raise InvalidEvent("missing_label", f"a label needs {fields.y!r}")
    ts = source.timestamp_ms / 1000 if source.timestamp_ms is not None else None
    return LateLabel(str(event_id), y, ts, source)


def _object(raw: bytes, max_bytes: int) -> dict[str, Any]:
    if len(raw) > max_bytes:
        raise InvalidEvent("too_large", f"{len(raw)} bytes > limit of {max_bytes}")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        doc = _strict_loads(raw)
    if not isinstance(doc, dict):
        raise InvalidEvent("not_object", f"message is a JSON {type(doc).__name__}, not an object")
    return doc


def _strict_loads(raw: bytes) -> Any:
    """What orjson refuses, the standard library reads again: it names the error precisely
    (NaN, bad UTF-8, depth) and accepts what JSON allows and orjson does not (lone surrogates).
    orjson reads everything else to the same values, but for integers beyond 64 bits, which it
    reads as floats: see ``_exact``."""
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise InvalidEvent("not_utf8", str(exc)) from None
    except RecursionError:
        raise InvalidEvent("too_deep", "JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError
        raise InvalidEvent("invalid_json", str(exc)) from None


def _exact(doc: dict[str, Any], raw: bytes, fields: FieldNames) -> dict[str, Any]:
    """orjson reads an integer beyond 64 bits (a 128-bit id) as a float: read such a message
    again with the standard library. Only the id, the label (whose errors quote it) and a
    scalar in place of the features can tell; a feature or timestamp is a float either way,
    and --max-abs-value (at most 1e18) rejects such a number in the same words whatever its
    type."""
    x = doc.get(fields.x)
    if _rounded(doc.get(fields.id)) or _rounded(doc.get(fields.y)) or (type(x) is float and _rounded(x)):
        return _strict_loads(raw)  # type: ignore[no-any-return]
    return doc


def _rounded(value: Any) -> bool:
    """Whether orjson may have read an integer literal as this float, or one inside it."""
    kind = type(value)
    if kind is float:
        return not -_INT64 < value < 2 * _INT64  # orjson's ints span [-2**63, 2**64)
    if kind is list:
        return any(_rounded(v) for v in value)
    if kind is dict:
        return any(_rounded(v) for v in value.values())
    return False


def _features(x: Any, name: str, max_abs: float) -> Features:
    if not isinstance(x, dict):
        raise InvalidEvent("x_not_object", f"{name!r} is a JSON {type(x).__name__}, not an object")
    missing = False
    for k, v in x.items():
        kind = type(v)  # a JSON parser's own types, never subclasses
        if kind is float or kind is int:
            if not -max_abs <= v <= max_abs:  # NaN fails too
                _in_range(v, f"feature {k!r}", max_abs)
        elif v is None:
            missing = True
        elif kind is not str and kind is not bool:
            raise InvalidEvent("bad_feature", f"feature {k!r} is a {kind.__name__}; {name!r} must be flat")
    return {k: v for k, v in x.items() if v is not None} if missing else x


def check_label(y: Any, task: str, max_abs: float = MAX_ABS) -> Label | None:
    """Check the label's type against the task; ``None`` means unlabelled."""
    if y is None:
        return None
    if task == "regression":
        if isinstance(y, bool) or not isinstance(y, int | float):
            raise InvalidEvent("bad_label", f"a regression label must be a number, got {y!r}")
        _in_range(y, "label", max_abs)
        return float(y)
    if isinstance(y, float) or not isinstance(y, bool | int | str):
        raise InvalidEvent("bad_label", f"a {task} label must be a boolean, integer or string, got {y!r}")
    return y


def encode_prediction(event: Event, prediction: Label | None, proba: dict[Any, float] | None,
                      model: str, version: int, mode: str, learned: int) -> bytes:
    """The prediction message (docs/contracts.md); ``learned`` pins the exact model state."""
    doc: dict[str, Any] = {
        "id": event.id, "key": event.key, "prediction": prediction,
        "model": model, "model_version": version, "learned": learned, "mode": mode,
        "source": str(event.source), "ts": event.ts,
    }
    if proba is not None:
        doc["proba"] = {_class_key(c): p for c, p in proba.items()}
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY, default=_number)


def _number(value: Any) -> float:
    """Numbers orjson does not know (a model's own numeric types) are written as floats."""
    if isinstance(value, Real):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _class_key(c: Any) -> str:
    if c is True or c is False:
        return "true" if c else "false"  # as JSON writes them
    return str(c)
