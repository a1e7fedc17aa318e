"""Messages crafted to stop, flood or crash-loop the service, at running learners and predictors."""

from __future__ import annotations

import json
import logging
import signal
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from consumers.predictor import Predictor
from tests.integration.helpers import (
    InThread,
    Message,
    kafka_clients,
    latest_meta,
    learn_all,
    make_settings,
    phishing,
    produce,
    read_all,
    spawn,
    store_for,
    wait_for,
)
from tools.events import event_bytes
from tools.localstack import KafkaBroker, RedisServer, create_topics

# Raises on a string feature: the model error these tests need (the default model one-hot encodes it).
SPEC = "preprocessing.StandardScaler() | linear_model.LogisticRegression()"
NEAR_LIMIT = 1_048_400  # a record the broker's default limit (1,048,588 bytes) still takes


def padded(size: int) -> bytes:
    """An invalid event (``x`` is not an object) of exactly ``size`` bytes."""
    head = b'{"x": 1, "pad": "'
    return head + b"p" * (size - len(head) - 2) + b'"}'


def checkpointed_all(settings: Any, count: int) -> bool:
    meta = latest_meta(settings)
    return meta is not None and sum(meta.offsets.values()) == count


def test_invalid_messages_near_the_limit_and_tombstones_are_dead_lettered_and_passed(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
    topic: Callable[..., str],
) -> None:
    rows = phishing()[:50]
    good = event_bytes(rows)
    bad: list[tuple[str | None, bytes | None]] = [(None, padded(30_000)), (None, padded(NEAR_LIMIT)),
                                                  ("tombstone", None)]
    stream: list[tuple[str | None, Any]] = [*good[:20], *bad, *good[20:]]
    small_dlq = unique("dlq-small")
    create_topics(kafka.bootstrap, [small_dlq], configs={"max.message.bytes": "20000"})
    learning = make_settings(kafka, redis_server, unique, events_topic=topic("events"),
                             dead_letter_topic=small_dlq)
    produce(kafka.bootstrap, learning.events_topic, stream)

    learn_all(learning, len(stream))
    # The frozen predictor, on a dead-letter topic with Kafka's default limit.
    default_dlq = unique("dlq-default")
    create_topics(kafka.bootstrap, [default_dlq], configs={"max.message.bytes": "1048588"})
    serving = make_settings(kafka, redis_server, unique, events_topic=learning.events_topic,
                            model=learning.model, key_prefix=learning.key_prefix,
                            dead_letter_topic=default_dlq)
    predictor = InThread(Predictor(serving, store_for(serving), kafka_clients(serving)))

    def predicted() -> list[Message]:
        predictor.check()
        found = read_all(kafka.bootstrap, serving.predictions_topic)
        return found if len(found) >= len(good) else []

    predictions = wait_for("the predictor's predictions", predicted)
    predictor.stop()
    assert len(predictions) == len(good)

    for settings, limit in ((learning, 20_000), (serving, 1_048_588)):
        letters = read_all(kafka.bootstrap, settings.dead_letter_topic)
        assert [int(m.headers["source.offset"]) for m in letters] == [20, 21, 22]
        small, near, tombstone = letters
        for letter, original in ((small, bad[0][1]), (near, bad[1][1])):
            assert original is not None and letter.headers["reason"] == b"x_not_object"
            if len(original) < limit // 2:
                assert letter.value == original and "truncated" not in letter.headers
                continue
            assert letter.headers["truncated"] == str(len(original)).encode()
            assert limit // 2 < len(letter.value) < limit and original.startswith(letter.value)
        assert tombstone.value is None and tombstone.headers["reason"] == b"not_object"
        assert "truncated" not in tombstone.headers


def test_dead_letters_are_sent_once_across_a_sigkill_and_a_restart(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
    topic: Callable[..., str],
) -> None:
    rows = phishing()[:60]
    stream: list[tuple[str | None, bytes]] = []
    for i, message in enumerate(event_bytes(rows)):
        stream.append(message)
        if i in (0, 6):  # a string feature: the default model raises (a rewind, then a checkpoint)
            stream.append((None, json.dumps({"x": {**rows[i][0], "country": "FR"}, "y": True}).encode()))
        if i % 6 == 0:
            stream.append((None, json.dumps({"x": rows[i][0], "y": [True]}).encode()))
    bad = len(stream) - len(rows)
    # No checkpoint but those after the model errors until SIGKILL: the restart replays the rest.
    settings = make_settings(kafka, redis_server, unique, events_topic=topic("events"), model_spec=SPEC,
                             checkpoint_every=1_000_000, checkpoint_interval=600.0)
    produce(kafka.bootstrap, settings.events_topic, stream)

    first = spawn("learn", settings)
    wait_for("every dead letter and prediction", lambda: first.poll() is None and len(
        read_all(kafka.bootstrap, settings.dead_letter_topic)) == bad and len(
        read_all(kafka.bootstrap, settings.predictions_topic)) == len(rows), timeout=90)
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    meta = latest_meta(settings)
    assert meta is not None and sum(meta.offsets.values()) < len(stream) - 40

    second = spawn("learn", replace(settings, checkpoint_interval=0.5))
    try:
        wait_for("the restart to checkpoint everything", lambda: second.poll() is None and
                 checkpointed_all(settings, len(stream)), timeout=90)
    finally:
        second.send_signal(signal.SIGTERM)
        out, _ = second.communicate(timeout=60)
    assert "sent already; a replay skips them" in out, out
    letters = Counter(int(m.headers["source.offset"])
                      for m in read_all(kafka.bootstrap, settings.dead_letter_topic))
    assert len(letters) == bad and set(letters.values()) == {1}
    predicted = Counter(m.json()["id"] for m in read_all(kafka.bootstrap, settings.predictions_topic))
    assert predicted == Counter(f"e-{i}" for i in range(len(rows)))
    final = latest_meta(settings)
    assert final is not None and final.learned == len(rows)
    assert final.dead_letters == {"model_error": 2, "bad_label": bad - 2}


def test_a_model_that_raises_on_every_event_stops_the_learner_in_one_line(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
    topic: Callable[..., str],
) -> None:
    rows = phishing()[:30]
    stream = [(None, json.dumps({"x": {**x, "country": "FR"}, "y": y}).encode()) for x, y in rows]
    settings = make_settings(kafka, redis_server, unique, events_topic=topic("events"), model_spec=SPEC,
                             max_model_errors=5)
    produce(kafka.bootstrap, settings.events_topic, stream)
    proc = spawn("learn", settings)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, out
    last = out.strip().splitlines()[-1]
    assert last.startswith("stream-learner learn: ModelBroken: --model-spec "), out
    assert settings.model_spec in last and "5 events in a row and has learned none" in last
    assert "TypeError" in last and "Traceback" not in out
    letters = read_all(kafka.bootstrap, settings.dead_letter_topic)
    assert [int(m.headers["source.offset"]) for m in letters] == [0, 1, 2, 3, 4]
    meta = latest_meta(settings)  # a restart goes on past what it dead-lettered
    assert meta is not None and meta.offsets == {f"{settings.events_topic}:0": 5}
    assert meta.dead_letters == {"model_error": 5}


def test_a_model_that_has_learned_is_not_stopped_by_any_run_of_model_errors(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
    topic: Callable[..., str],
) -> None:
    rows = phishing()[:40]
    stream = [*event_bytes(rows[:10]),
              *((None, json.dumps({"x": {**x, "country": "FR"}, "y": y}).encode()) for x, y in rows[10:30]),
              *event_bytes(rows[30:], start=30)]
    settings = make_settings(kafka, redis_server, unique, events_topic=topic("events"), model_spec=SPEC,
                             max_model_errors=5)
    produce(kafka.bootstrap, settings.events_topic, stream)
    meta = learn_all(settings, len(stream))
    assert meta.learned == 20 and meta.dead_letters == {"model_error": 20}


def test_a_spent_feature_budget_is_said_in_the_log(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
    topic: Callable[..., str], caplog: pytest.LogCaptureFixture,
) -> None:
    rows = phishing()[:50]
    stream = event_bytes([({**x, f"new-{i}": 1.0}, y) for i, (x, y) in enumerate(rows)])
    settings = make_settings(kafka, redis_server, unique, events_topic=topic("events"), max_features=12)
    produce(kafka.bootstrap, settings.events_topic, stream)
    caplog.set_level(logging.WARNING)
    meta = learn_all(settings, len(stream))
    assert meta.features == {"known": 12, "refused": 47}
    spent = [r.getMessage() for r in caplog.records if "feature budget is spent" in r.getMessage()]
    assert spent and "(--max-features 12)" in spent[0]
