from __future__ import annotations

import json

import pytest

from stream_learner.errors import InvalidEvent
from stream_learner.events import Event, FieldNames, Source, decode_event, encode_prediction

SRC = Source("events", 2, 41, 1_764_086_400_500)


def reason(raw: bytes, task: str = "binary", **kw: object) -> str:
    with pytest.raises(InvalidEvent) as info:
        decode_event(raw, SRC, FieldNames(), task, **kw)  # type: ignore[arg-type]
    return info.value.reason


def test_a_full_event_is_decoded() -> None:
    raw = (b'{"id": "e-1029", "key": "user-7", "ts": 1764086400.5, '
           b'"x": {"amount": 12.5, "country": "FR"}, "y": true}')
    event = decode_event(raw, SRC, FieldNames(), "binary")
    assert event == Event("e-1029", "user-7", 1764086400.5, {"amount": 12.5, "country": "FR"}, True, SRC)


def test_defaults_come_from_kafka() -> None:
    event = decode_event(b'{"x": {}}', SRC, FieldNames(), "regression")
    assert (event.id, event.ts, event.y, event.labelled) == ("events/2/41", 1764086400.5, None, False)


def test_field_names_are_configurable() -> None:
    fields = FieldNames(id="uid", x="features", y="label", ts="time", key="user")
    raw = b'{"uid": 7, "features": {"a": 1}, "label": 2.5, "user": "u"}'
    event = decode_event(raw, SRC, fields, "regression")
    assert (event.id, event.x, event.y, event.key) == ("7", {"a": 1}, 2.5, "u")


@pytest.mark.parametrize(("raw", "expected"), [
    (b"not json", "invalid_json"),
    (b"\xff\xfe", "not_utf8"),
    (b"[]", "not_object"),
    (b'"x"', "not_object"),
    (b'{"y": true}', "missing_x"),
    (b'{"x": 3}', "x_not_object"),
    (b'{"x": {"a": {"b": 1}}}', "bad_feature"),
    (b'{"x": {"a": [1]}}', "bad_feature"),
    (b'{"x": {"a": NaN}}', "non_finite"),
    (b'{"x": {"a": -Infinity}}', "non_finite"),
    (b'{"x": {"a": 1e999}}', "non_finite"),
    (b'{"x": {}, "ts": 1e999}', "non_finite"),
    (b'{"x": {}, "ts": "yesterday"}', "bad_field"),
    (b'{"x": {}, "id": [1]}', "bad_field"),
    (b'{"x": {}, "key": 5}', "bad_field"),
    (b'{"x": {}, "y": 0.5}', "bad_label"),
    (b'{"x": {}, "y": {"a": 1}}', "bad_label"),
    (b"[" * 100_000 + b"]" * 100_000, "too_deep"),
])
def test_bad_input_has_a_reason(raw: bytes, expected: str) -> None:
    assert reason(raw) == expected


def test_regression_labels_are_finite_numbers() -> None:
    assert reason(b'{"x": {}, "y": true}', "regression") == "bad_label"
    assert reason(b'{"x": {}, "y": "3"}', "regression") == "bad_label"
    assert reason(b'{"x": {}, "y": NaN}', "regression") == "non_finite"


def test_oversized_messages_are_rejected_unread() -> None:
    assert reason(b'{"x": {}}' + b" " * 100, max_bytes=64) == "too_large"


def test_prediction_names_the_model_version() -> None:
    event = decode_event(b'{"id": "e-1", "key": "k", "x": {}}', SRC, FieldNames(), "binary")
    doc = json.loads(encode_prediction(event, True, {True: 0.91, False: 0.09}, "fraud", 42, "learn", 7))
    assert doc == {"id": "e-1", "key": "k", "prediction": True, "proba": {"true": 0.91, "false": 0.09},
                   "model": "fraud", "model_version": 42, "learned": 7, "mode": "learn",
                   "source": "events/2/41", "ts": 1764086400.5}
