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
_INT64 = 2**63
# Longer integer literals (a 128-bit id has 39 digits) are read as floats, as orjson reads them.
MAX_INT_CHARS = 40
# A class label is written in every prediction's probabilities, once per class: with at most
# --max-classes (1000) labels of 100 characters, a prediction stays well within Kafka's 1 MiB.
MAX_LABEL_CHARS = 100


@dataclass(frozen=True, slots=True)
class Limits:
    """What one message may hold; every bound is a setting (docs/configuration.md)."""

    max_bytes: int = 1024 * 1024
    max_abs: float = MAX_ABS
    max_features: int = 1000  # per event
    max_string_chars: int = 1024  # ids, keys, feature names and values, labels
    max_ts_ahead: float = 3600.0  # seconds an event's ts may lie ahead of its Kafka timestamp


LIMITS = Limits()


@dataclass(frozen=True, slots=True)
class FieldNames:
    """Names of the event's fields, all configurable."""

    id: str = "id"
    key: str = "key"
    ts: str = "ts"
    x: str = "x"
    y: str = "y"


# One Source and one Event per message: not frozen, since a frozen dataclass's __init__ sets
# each field through object.__setattr__, ~0.9 us more per message for the two.
@dataclass(slots=True)
class Source:
    """Where a message came from; Kafka timestamps are in milliseconds."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None = None

    def __str__(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


Partition = tuple[str, int]  # (topic, partition): how the service names a partition


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


@dataclass(slots=True)
class Prediction:
    """What a model said of one event, and the features it said it from (what it learns)."""

    event: Event
    y_pred: Label | None
    proba: dict[Any, float] | None
    learned: int  # the events the model had learned when it said it: its exact state
    x: Features


def _reject_constant(name: str) -> Any:
    raise InvalidEvent("non_finite", f"{name} is not a finite number")


def _bounded_int(literal: str) -> int | float:
    """An integer literal as the standard library reads it, but one too long to be an id is read
    as a float, as orjson reads it (and one beyond a double is infinite): a 400-digit integer
    never becomes a Python int that overflows later in ``float()``."""
    return int(literal) if len(literal) <= MAX_INT_CHARS else float(literal)


def shown(value: Any, limit: int = 60) -> str:
    """A value for an error message: scalars quoted and shortened, containers by type alone, so
    that nothing recurses into, or copies, what a producer nested or inflated."""
    if value is None or isinstance(value, bool | int | float):
        text = repr(value)
    elif isinstance(value, str):
        text = repr(value[:limit]) + ("..." if len(value) > limit else "")
    else:
        return json_kind(value)
    return text if len(text) <= limit else text[:limit] + "..."


def json_kind(value: Any) -> str:
    """A JSON value's type in words: what an error says of a value whose text may differ
    between the two parsers (orjson reads a 21-digit integer as a float)."""
    if isinstance(value, bool):
        return "a JSON boolean"
    if isinstance(value, int | float):
        return "a JSON number"
    return _KINDS.get(type(value), f"a {type(value).__name__}")


_KINDS = {dict: "a JSON object", list: "a JSON array", str: "a JSON string", type(None): "null"}


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


def _text(value: str, what: str, limits: Limits) -> str:
    if len(value) > limits.max_string_chars:
        raise InvalidEvent("too_long", f"{what} has {len(value)} characters, more than "
                                       f"{limits.max_string_chars}")
    return value


def decode_event(raw: bytes | None, source: Source, fields: FieldNames, task: str,
                 limits: Limits = LIMITS) -> Event:
    """Validate one message and return the event, or raise ``InvalidEvent``.

    ``null`` feature values mean "missing" and are dropped, as River expects.
    """
    doc, strict = _object(raw, limits.max_bytes, fields)
    return event_from_doc(doc, source, fields, task, limits, strict=strict)


def event_from_doc(doc: dict[str, Any], source: Source, fields: FieldNames, task: str,
                   limits: Limits = LIMITS, *, strict: bool = True) -> Event:
    """``decode_event`` of a message already read as a JSON object (``strict``: by
    ``strict_loads``, which leaves text that is not UTF-8 to be refused here)."""
    if fields.x not in doc:
        raise InvalidEvent("missing_x", f"no {fields.x!r} field")
    x = _features(doc[fields.x], fields.x, limits)
    y = check_label(doc.get(fields.y), task, limits)
    event_id = _event_id(doc.get(fields.id), fields, limits)
    if event_id is None:
        event_id = str(source)
    key = doc.get(fields.key)
    if key is not None:
        if not isinstance(key, str):
            raise InvalidEvent("bad_field", f"{fields.key!r} must be a string, got {json_kind(key)}")
        _text(key, repr(fields.key), limits)
    ts = _event_time(doc.get(fields.ts), source, fields, limits)
    if strict:
        _check_utf8(event_id, key, x, y, fields)
    return Event(event_id, key, ts, x, y, source)


def _event_id(value: Any, fields: FieldNames, limits: Limits) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidEvent("bad_field", f"{fields.id!r} must be a string or an integer, got {shown(value)}")
    return _text(str(value), repr(fields.id), limits)


def _event_time(value: Any, source: Source, fields: FieldNames, limits: Limits) -> float | None:
    """The event time: ``ts``, or the Kafka timestamp. A ``ts`` far ahead of the Kafka timestamp
    would move event time (and expire every event waiting for a label) at one stroke."""
    kafka_ts = source.timestamp_ms / 1000 if source.timestamp_ms is not None else None
    if value is None:
        return kafka_ts
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidEvent("bad_field", f"{fields.ts!r} must be a number of seconds, got {json_kind(value)}")
    ts = _finite(float(value), fields.ts)
    if kafka_ts is not None and kafka_ts > 0 and ts > kafka_ts + limits.max_ts_ahead:
        raise InvalidEvent("bad_field", f"{fields.ts!r} is {ts - kafka_ts:.3g} s ahead of the Kafka "
                                        f"timestamp, more than {limits.max_ts_ahead:g} s")
    return ts


def _check_utf8(event_id: str, key: str | None, x: Features, y: Label | None,
                fields: FieldNames) -> None:
    """What orjson refused and the standard library read may hold lone surrogates ("\\ud800"),
    which no UTF-8 encoder takes: refuse them in every string the service keeps or writes."""
    named = [(event_id, fields.id), (key, fields.key), (y, fields.y)]
    named += [(k, f"feature name {shown(k)}") for k in x]
    named += [(v, f"feature {shown(k)}") for k, v in x.items()]
    for value, what in named:
        if isinstance(value, str):
            try:
                value.encode()
            except UnicodeEncodeError:
                raise InvalidEvent("not_utf8", f"{what} holds a lone surrogate") from None


@dataclass(frozen=True, slots=True)
class LateLabel:
    """A label for an event predicted earlier, from the labels topic."""

    id: str
    y: Label
    ts: float | None
    source: Source


def decode_label(raw: bytes | None, source: Source, fields: FieldNames, task: str,
                 limits: Limits = LIMITS) -> LateLabel:
    """A labels-topic message ``{"id": ..., "y": ...}``, validated like an event's label."""
    doc, strict = _object(raw, limits.max_bytes, fields)
    event_id = _event_id(doc.get(fields.id), fields, limits)
    if event_id is None:
        raise InvalidEvent("missing_id", f"a label needs {fields.id!r}")
    y = check_label(doc.get(fields.y), task, limits)
    if y is None:
        raise InvalidEvent("missing_label", f"a label needs {fields.y!r}")
    if strict:
        _check_utf8(event_id, None, {}, y, fields)
    ts = source.timestamp_ms / 1000 if source.timestamp_ms is not None else None
    return LateLabel(event_id, y, ts, source)


def _object(raw: bytes | None, max_bytes: int, fields: FieldNames) -> tuple[dict[str, Any], bool]:
    """The message as a JSON object, and whether the standard library read it (``strict``)."""
    if raw is None:
        raise InvalidEvent("not_object", "the message has no value (a tombstone)")
    if len(raw) > max_bytes:
        raise InvalidEvent("too_large", f"{len(raw)} bytes > limit of {max_bytes}")
    strict = False
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if str(exc).startswith("depth limit exceeded"):
            # Deeper than the standard library could read, and reading it would recurse to the
            # interpreter's limit, where a finalizer that the garbage collector runs fails.
            raise InvalidEvent("too_deep", "JSON nested too deeply") from None
        doc, strict = strict_loads(raw), True
    else:
        if isinstance(doc, dict) and (_rounded(doc.get(fields.id)) or _rounded(doc.get(fields.y))):
            doc, strict = strict_loads(raw), True
    if not isinstance(doc, dict):
        raise InvalidEvent("not_object", f"the message is {json_kind(doc)}, not an object")
    return doc, strict


def strict_loads(raw: bytes) -> Any:
    """What orjson refuses, the standard library reads again: it names the error precisely
    (NaN, bad UTF-8, depth) and accepts what JSON allows and orjson does not (lone surrogates,
    refused later by ``_check_utf8``). orjson reads everything else to the same values, but for
    integers beyond 64 bits, which it reads as floats: see ``_rounded``."""
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant, parse_int=_bounded_int)
    except UnicodeDecodeError as exc:
        raise InvalidEvent("not_utf8", str(exc)) from None
    except RecursionError:
        raise InvalidEvent("too_deep", "JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError
        raise InvalidEvent("invalid_json", str(exc)) from None


def _rounded(value: Any) -> bool:
    """Whether orjson may have read an integer literal as this float: it reads an integer beyond
    64 bits (a 128-bit id) as a float, and the message is read again with the standard library.
    Only the id and the label can tell (a feature or timestamp is a float either way, and
    --max-abs-value, at most 1e18, rejects such a number in the same words whatever its type),
    and only when they are numbers: errors name a container by its type alone."""
    return type(value) is float and not -_INT64 < value < 2 * _INT64  # orjson's ints: [-2**63, 2**64)


def _features(x: Any, name: str, limits: Limits) -> Features:
    if not isinstance(x, dict):
        raise InvalidEvent("x_not_object", f"{name!r} is {json_kind(x)}, not an object")
    if len(x) > limits.max_features:
        raise InvalidEvent("too_many_features", f"{name!r} has {len(x)} features, more than "
                                                f"{limits.max_features}")
    max_abs, max_chars = limits.max_abs, limits.max_string_chars
    missing = False
    for k, v in x.items():
        kind = type(v)  # a JSON parser's own types, never subclasses
        if kind is float or kind is int:
            if not -max_abs <= v <= max_abs:  # NaN fails too
                _in_range(v, f"feature {shown(k)}", max_abs)
        elif v is None:
            missing = True
        elif kind is str:
            if len(v) > max_chars:
                _text(v, f"feature {shown(k)}", limits)
        elif kind is not bool:
            raise InvalidEvent("bad_feature", f"feature {shown(k)} is {json_kind(v)}; {name!r} must be flat")
        if len(k) > max_chars:
            _text(k, f"feature name {shown(k)}", limits)
    return {k: v for k, v in x.items() if v is not None} if missing else x


def check_label(y: Any, task: str, limits: Limits = LIMITS) -> Label | None:
    """Check the label's type against the task; ``None`` means unlabelled."""
    if y is None:
        return None
    if task == "regression":
        if isinstance(y, bool) or not isinstance(y, int | float):
            raise InvalidEvent("bad_label", f"a regression label must be a number, got {shown(y)}")
        _in_range(y, "label", limits.max_abs)
        return float(y)
    if isinstance(y, float) or not isinstance(y, bool | int | str):
        raise InvalidEvent("bad_label", f"a {task} label must be a boolean, integer or string, "
                                        f"got {shown(y)}")
    if type(y) is int and not -_INT64 <= y < 2 * _INT64:
        raise InvalidEvent("bad_label", f"an integer label must fit in 64 bits, got {y:.3g}")
    if type(y) is str and len(y) > MAX_LABEL_CHARS:
        raise InvalidEvent("too_long", f"a label has {len(y)} characters, more than {MAX_LABEL_CHARS}")
    label: Label = y
    return label


def encode_prediction(prediction: Prediction, *, model: str, version: int, mode: str,
                      variant: str = "champion") -> bytes:
    """The prediction message (docs/contracts.md); ``learned`` pins the exact model state, and
    ``variant`` names the champion or a challenger. ``TypeError`` or ``ValueError`` when a
    model's output is not JSON."""
    event, proba = prediction.event, prediction.proba
    doc: dict[str, Any] = {
        "id": event.id, "key": event.key, "prediction": prediction.y_pred,
        "model": model, "model_version": version, "variant": variant, "learned": prediction.learned,
        "mode": mode, "source": str(event.source), "ts": event.ts,
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
