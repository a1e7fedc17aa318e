"""The examples of docs/contracts.md, exactly as written, through the default learner and predictor."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from consumers.predictor import Predictor
from stream_learner.config import DEFAULT_SPEC
from tests.integration.helpers import (
    InThread,
    kafka_clients,
    learn_all,
    make_settings,
    produce,
    read_all,
    store_for,
    wait_for,
)
from tools.localstack import ROOT, KafkaBroker, RedisServer


def examples() -> tuple[bytes, dict[str, Any]]:
    """The event and the prediction of docs/contracts.md: its first two JSON blocks."""
    blocks = re.findall(r"```json\n(.*?)```", (ROOT / "docs" / "contracts.md").read_text(), re.S)
    event, prediction = blocks[0].strip().encode(), json.loads(blocks[1])
    assert json.loads(event)["x"] == {"amount": 12.5, "country": "FR"}
    return event, prediction


def test_the_contracts_examples_pass_the_default_learner_and_predictor(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
    topic: Callable[..., str],
) -> None:
    event, documented = examples()
    unlabelled = json.dumps({k: v for k, v in json.loads(event).items() if k != "y"}).encode()
    learning = make_settings(kafka, redis_server, unique, events_topic=topic("events"),
                             dead_letter_topic=topic("dlq"))
    assert learning.model_spec == DEFAULT_SPEC
    produce(kafka.bootstrap, learning.events_topic, [(None, event), (None, event), (None, unlabelled)])
    meta = learn_all(learning, 3)
    assert meta.learned == 2 and meta.dead_letters == {}

    serving = replace(learning, predictions_topic=topic("served"), dead_letter_topic=topic("served-dlq"))
    predictor = InThread(Predictor(serving, store_for(serving), kafka_clients(serving)))

    def served() -> bool:
        predictor.check()
        return len(read_all(kafka.bootstrap, serving.predictions_topic)) == 3

    wait_for("the predictor's three predictions", served)
    predictor.stop()
    for side in (learning, serving):
        assert read_all(kafka.bootstrap, side.dead_letter_topic) == []
        for message in read_all(kafka.bootstrap, side.predictions_topic):
            doc = message.json()
            assert set(doc) == set(documented) | {"learned"}, "the prediction's fields are the contract's"
            assert (doc["id"], doc["key"], doc["ts"], message.key) == ("e-1029", "user-7", 1764086400.5,
                                                                        b"user-7")
            assert set(doc["proba"]) == {"true", "false"} and doc["mode"] in ("learn", "frozen")
