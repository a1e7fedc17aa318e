"""Hostile input at volume, at a running learner: it never dies, never learns a bad value, and
dead-letters every bad message with the reason an in-process oracle gives."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Sequence
from typing import Any

from stream_learner.engine import Engine, ModelState
from stream_learner.errors import InvalidEvent
from stream_learner.events import FieldNames, Source, decode_event
from tests.integration.helpers import (
    learn_all,
    load_checkpoint,
    make_settings,
    phishing,
    produce,
    read_all,
)
from tools.localstack import KafkaBroker, RedisServer

SPEC = "preprocessing.StandardScaler() | linear_model.LogisticRegression()"


def hostile(rng: random.Random, x: dict[str, Any]) -> bytes:
    """One message from a mixture of the ways input goes wrong (and some odd but valid ones)."""
    kind = rng.randrange(12)
    if kind == 0:
        return rng.randbytes(rng.randrange(1, 300))
    if kind == 1:
        return b'{"x": ' + b"[" * rng.randrange(1000, 100_000)
    if kind == 2:
        return json.dumps({"x": {f"f{i}": "v" * 300 for i in range(rng.randrange(3500, 5000))},
                           "y": rng.random() < 0.5}).encode()  # 1.1 to 1.5 MB: over the limit
    if kind == 3:
        bad = rng.choice(["NaN", "Infinity", "-Infinity", "1e999", "1e200", "-1e300"])
        return ('{"x": {"' + rng.choice(list(x)) + '": ' + bad + '}, "y": true}').encode()
    if kind == 4:
        return json.dumps({"x": {"ключ-🔑": 1.5, "\u0000": 2.0, "é": rng.random()}, "y": False}).encode()
    if kind == 5:
        return json.dumps({"x": x, "y": rng.choice([1.5, [True], {"a": 1}, "maybe", 7])}).encode()
    if kind == 6:
        return json.dumps({"x": {**x, "country": "FR"}, "y": True}).encode()  # a string feature
    if kind == 7:
        return json.dumps(rng.choice([[], "x", 3, None, {"y": True}, {"x": None}, {"x": [1]}])).encode()
    if kind == 8:
        return json.dumps({"x": {"nested": {"a": 1}}, "y": True}).encode()
    if kind == 9:
        return json.dumps({"x": x, "y": True, "ts": "yesterday"}).encode()
    if kind == 10:
        return b"\xff" + json.dumps({"x": x}).encode()
    return json.dumps({"x": x, "y": True, "id": {"not": "a string"}}).encode()


def oracle(messages: Sequence[bytes | None], topic: str, timestamps: list[int] | None = None
           ) -> tuple[ModelState, dict[int, str]]:
    """What the service must do: the same core, as if an event the model raised on never came."""
    letters: dict[int, str] = {}
    while True:
        engine = Engine(ModelState.fresh(SPEC))
        for offset, raw in enumerate(messages):
            if offset in letters:
                continue
            source = Source(topic, 0, offset, timestamps[offset] if timestamps else None)
            try:
                engine.process(decode_event(raw, source, FieldNames(), engine.state.task))
            except InvalidEvent as exc:
                letters[offset] = exc.reason
                if exc.reason == "model_error":
                    break  # the model is half-updated: start over without this event
        else:
            return engine.state, letters


def test_a_hostile_stream_is_dead_lettered_and_never_poisons_the_model(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
    topic: Callable[..., str], kafka_client: str,
) -> None:
    rng = random.Random(2026)
    rows = phishing()
    messages = []
    for i, (x, y) in enumerate(rows):
        messages.append(json.dumps({"id": f"e-{i}", "x": x, "y": y}).encode())
        if i % 4 == 0:
            messages.append(hostile(rng, x))
    settings = make_settings(kafka, redis_server, unique, events_topic=topic("events"), checkpoint_every=200,
                             model_spec=SPEC, kafka_client=kafka_client)
    produce(kafka.bootstrap, settings.events_topic, [(None, m) for m in messages])

    learn_all(settings, len(messages))

    expected_state, expected_letters = oracle(messages, settings.events_topic)
    sent = [(int(m.headers["source.offset"]), m.headers["reason"].decode())
            for m in read_all(kafka.bootstrap, settings.dead_letter_topic)]
    assert len(sent) == len(expected_letters), "each rejected message is dead-lettered exactly once"
    assert dict(sent) == expected_letters
    assert len(set(expected_letters.values())) >= 8, "the mixture should exercise many reasons"

    ckpt = load_checkpoint(settings)
    assert ckpt.meta.learned == expected_state.learned
    weights = ckpt.state.model["LogisticRegression"].weights
    assert weights == expected_state.model["LogisticRegression"].weights
    assert all(math.isfinite(w) for w in weights.values())
