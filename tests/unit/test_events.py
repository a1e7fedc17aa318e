from __future__ import annotations

import json

import pytest

from stream_learner.errors import InvalidEvent
from stream_learner.events import (
    LIMITS,
    Event,
    FieldNames,
    Limits,
    Prediction,
    Source,
    decode_event,
    decode_label,
    encode_prediction,
)

SRC = Source("events", 2, 41, 1_764_086_400_500)


def reason(raw: bytes, task: str = "binary", limits: Limits = LIMITS) -> str:
    with pytest.raises(InvalidEvent) as info:
        decode_event(raw, SRC, FieldNames(), task, limits)
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


def test_json_deeper_than_orjson_reads_is_refused_without_a_recursive_parse(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The standard library's parse would recurse to the interpreter's limit, where a finalizer
    # the garbage collector runs then fails ("Exception ignored in ...").
    def recursive_parse(raw: bytes) -> None:
        raise AssertionError("the standard library's parser was called")

    monkeypatch.setattr("stream_learner.events.strict_loads", recursive_parse)
    assert reason(b'{"x": ' + b"[" * 1100 + b"]" * 1100 + b"}") == "too_deep"


def test_regression_labels_are_finite_numbers() -> None:
    assert reason(b'{"x": {}, "y": true}', "regression") == "bad_label"
    assert reason(b'{"x": {}, "y": "3"}', "regression") == "bad_label"
    assert reason(b'{"x": {}, "y": NaN}', "regression") == "non_finite"


def test_oversized_messages_are_rejected_unread() -> None:
    assert reason(b'{"x": {}}' + b" " * 100, limits=Limits(max_bytes=64)) == "too_large"


def test_prediction_names_the_model_version() -> None:
    event = decode_event(b'{"id": "e-1", "key": "k", "x": {}}', SRC, FieldNames(), "binary")
    prediction = Prediction(event, True, {True: 0.91, False: 0.09}, learned=7, x={})
    doc = json.loads(encode_prediction(prediction, model="fraud", version=42, mode="learn"))
    assert doc == {"id": "e-1", "key": "k", "prediction": True, "proba": {"true": 0.91, "false": 0.09},
                   "model": "fraud", "model_version": 42, "variant": "champion", "learned": 7,
                   "mode": "learn", "source": "events/2/41", "ts": 1764086400.5}


BIG = "1" * 401
DEEP = "[" * 500 + "]" * 500


@pytest.mark.parametrize(("raw", "task", "expected"), [
    (f'{{"x": {{"a": {BIG}}}, "y": true}}', "binary", "non_finite"),
    (f'{{"x": {{"a": 1}}, "ts": {BIG}}}', "binary", "non_finite"),
    (f'{{"x": {{"a": 1}}, "y": {BIG}}}', "regression", "non_finite"),
    (f'{{"x": {{"a": 1}}, "y": {BIG}}}', "multiclass", "bad_label"),
    (f'{{"x": {{"a": 1}}, "y": {"9" * 30}}}', "multiclass", "bad_label"),  # beyond 64 bits
    (f'{{"x": {{"a": 1}}, "id": {BIG}}}', "binary", "bad_field"),
    (f'{{"x": {{"a": 1}}, "id": {DEEP}}}', "binary", "bad_field"),
    (f'{{"x": {{"a": 1}}, "y": {DEEP}}}', "binary", "bad_label"),
    (f'{{"x": {{"a": 1}}, "y": {DEEP}, "id": 1e30}}', "regression", "bad_label"),
    ('{"x": {"a": 1}, "id": "\\ud800", "y": true}', "binary", "not_utf8"),
    ('{"x": {"a": 1}, "key": "\\udfff"}', "binary", "not_utf8"),
    ('{"x": {"\\ud800": 1}}', "binary", "not_utf8"),
    ('{"x": {"a": "\\ud800"}}', "binary", "not_utf8"),
    ('{"x": {}, "y": "\\ud800"}', "multiclass", "not_utf8"),
    ('{"x": {}, "id": "' + "i" * 1025 + '"}', "binary", "too_long"),
    ('{"x": {"' + "n" * 1025 + '": 1}}', "binary", "too_long"),
    ('{"x": {"a": "' + "v" * 1025 + '"}}', "binary", "too_long"),
    ('{"x": {}, "y": "' + "c" * 101 + '"}', "multiclass", "too_long"),
    ('{"x": {' + ", ".join(f'"f{i}": {i}' for i in range(1001)) + "}}", "binary", "too_many_features"),
])
def test_crafted_values_are_refused_with_a_reason(raw: str, task: str, expected: str) -> None:
    """Each of these once escaped the decoder (OverflowError, RecursionError) or passed it and
    failed after the model had learned (UnicodeEncodeError, orjson's TypeError)."""
    assert reason(raw.encode(), task) == expected


def test_a_128_bit_id_and_a_valid_surrogate_pair_are_kept() -> None:
    event = decode_event(f'{{"x": {{"\\ud83d\\ude00": 1}}, "id": {2**127 + 1}}}'.encode(), SRC,
                         FieldNames(), "binary")
    assert (event.id, event.x) == (str(2**127 + 1), {"\U0001F600": 1})


def test_an_event_time_far_ahead_of_the_kafka_timestamp_is_refused() -> None:
    kafka_ts = SRC.timestamp_ms / 1000  # type: ignore[operator]
    ahead = f'{{"x": {{}}, "ts": {kafka_ts + 3601}}}'.encode()
    assert reason(ahead) == "bad_field"
    assert reason(b'{"x": {}, "ts": 1e300}') == "bad_field"
    assert decode_event(ahead, SRC, FieldNames(), "binary", Limits(max_ts_ahead=7200)).ts == kafka_ts + 3601
    past = decode_event(b'{"x": {}, "ts": 0.5}', SRC, FieldNames(), "binary")  # event time may lag
    assert past.ts == 0.5


def test_error_details_do_not_copy_what_a_producer_inflated() -> None:
    with pytest.raises(InvalidEvent) as info:
        decode_event(('{"x": {}, "y": "' + "z" * 900 + '"}').encode(), SRC, FieldNames(), "regression")
    assert len(info.value.detail) < 200


def test_a_tombstone_is_refused_and_labels_are_checked_like_events() -> None:
    assert reason(None) == "not_object"  # type: ignore[arg-type]
    with pytest.raises(InvalidEvent) as info:
        decode_label(b'{"id": "\\ud800", "y": true}', SRC, FieldNames(), "binary")
    assert info.value.reason == "not_utf8"
    with pytest.raises(InvalidEvent) as info:
        decode_label(f'{{"id": "e", "y": {DEEP}}}'.encode(), SRC, FieldNames(), "binary")
    assert info.value.reason == "bad_label"
