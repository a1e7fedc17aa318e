"""Property-based, at a running learner and a running frozen predictor: any JSON value in any
field, any string, any size and nesting, raw bytes and tombstones, between valid events. Neither
dies; every message gets a prediction or one dead letter; the learner's decisions and model equal
an in-process oracle's; both sides agree on what is invalid; the model stays finite."""

from __future__ import annotations

import http.client
import json
import math
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka import KafkaProducer

from consumers.learner import Learner
from consumers.predictor import Predictor
from stream_learner.config import Settings
from stream_learner.observe.exposition import Exposition
from stream_learner.observe.predict import HttpPredict
from stream_learner.observe.server import HttpServer
from tests.integration.helpers import (
    InThread,
    kafka_clients,
    latest_meta,
    make_settings,
    phishing,
    read_all,
    store_for,
    wait_for,
)
from tests.integration.test_hostile_stream import SPEC, oracle
from tools.localstack import KafkaBroker, RedisServer

DEEP = "__deep__"
strings = (st.text(max_size=12)
           | st.sampled_from(["\ud800", "a\udfffb", "\U0001F511", "\u0000", "x" * 1500, "é" * 600, DEEP]))
numbers = (st.integers(min_value=-(10**450), max_value=10**450) | st.integers(-(2**70), 2**70)
           | st.floats(allow_nan=True, allow_infinity=True)
           | st.sampled_from([2**63, 2**64, -(2**63) - 1, 10**40, 1e300, -1e16, 1e15, 5e-324]))
scalars = st.none() | st.booleans() | numbers | strings
values = st.recursive(scalars, lambda kids: st.lists(kids, max_size=3)
                      | st.dictionaries(strings, kids, max_size=3), max_leaves=8)
plain = st.floats(-10, 10) | st.integers(-5, 5) | st.booleans() | st.none()
features = (st.dictionaries(strings, plain, max_size=6)  # valid, odd names
            | st.dictionaries(strings, plain | scalars, max_size=6)  # a hostile value here and there
            | values)
labels = st.booleans() | st.none() | values
documents = (st.fixed_dictionaries({"x": features}, optional={
                 "y": labels, "id": values, "key": values, "ts": values | numbers, "extra": values})
             | st.fixed_dictionaries({}, optional={
                 "x": values, "y": values, "id": values, "key": values, "ts": values, "extra": values}))
messages = (documents.map(lambda doc: ("doc", doc)) | st.binary(max_size=200).map(lambda b: ("raw", b))
            | st.just(("tombstone", None)))


def encode(kind: str, body: Any, depth: int) -> bytes | None:
    if kind != "doc":
        return body  # type: ignore[no-any-return]
    text = json.dumps(body, allow_nan=True)  # NaN and Infinity literals on purpose
    return text.replace(json.dumps(DEEP), "[" * depth + "]" * depth).encode()


def http_answers(settings: Settings, predictor: Predictor, stream: list[bytes | None]) -> dict[int, str]:
    """Each message (but tombstones) POSTed to a running predictor's HTTP server: its offset ->
    "ok" (a prediction, by the version served) or the 400's reason; no other answer."""
    board = predictor.board
    exposition = Exposition(board)
    predict = HttpPredict(settings.model, settings.event_fields(), settings.event_limits(),
                          lambda: predictor.serving)
    out = {}
    with HttpServer(board, exposition, host="127.0.0.1", port=0, predict=predict) as server:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        for offset, body in enumerate(stream):
            if body is None:
                continue
            connection.request("POST", "/predict", body=body)
            answer = connection.getresponse()
            doc = json.loads(answer.read())
            assert answer.status in (200, 400), (answer.status, doc)
            if answer.status == 200:
                assert doc["model_version"] == predictor.version and doc["mode"] == "frozen"
            out[offset] = "ok" if answer.status == 200 else doc["reason"]
        connection.close()
    return out


def produce_at(bootstrap: str, topic: str, values: list[bytes | None], base_ms: int) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                             max_request_size=16 * 1024 * 1024)
    futures = [producer.send(topic, key=b"k", value=v, timestamp_ms=base_ms + i)
               for i, v in enumerate(values)]
    producer.flush()
    producer.close()
    assert all(f.succeeded() for f in futures)


@settings(max_examples=5, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(hostile=st.lists(st.tuples(messages, st.integers(1, 1500)), min_size=60, max_size=60))
def test_any_json_in_any_field_at_a_running_learner_and_predictor(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
    topic: Callable[..., str], hostile: list[tuple[tuple[str, Any], int]],
) -> None:
    rows = phishing()[:120]
    rng = random.Random(len(hostile))
    stream: list[bytes | None] = []
    for i, (x, y) in enumerate(rows):
        stream.append(json.dumps({"id": f"e-{i}", "x": x, "y": y if rng.random() < 0.8 else None}).encode())
        if i % 2 == 0:
            (kind, body), depth = hostile[i // 2]
            stream.append(encode(kind, body, depth))
    learning = make_settings(kafka, redis_server, unique, events_topic=topic("events"), checkpoint_every=50,
                             model_spec=SPEC,
                             predictions_topic=topic("predictions"), dead_letter_topic=topic("dlq"))
    serving = replace(learning, predictions_topic=topic("served"), dead_letter_topic=topic("served-dlq"),
                      wait_for_model=30.0)
    base_ms = int(time.time() * 1000)
    produce_at(kafka.bootstrap, learning.events_topic, stream, base_ms)

    learner = InThread(Learner(learning, store_for(learning), kafka_clients(learning)))
    predictor = InThread(Predictor(serving, store_for(serving), kafka_clients(serving)))

    def learned_all() -> bool:
        learner.check()
        meta = latest_meta(learning)
        return meta is not None and sum(meta.offsets.values()) == len(stream)

    wait_for("the learner to checkpoint every message", learned_all, timeout=120)

    def served_all() -> bool:
        predictor.check()
        return (len(read_all(kafka.bootstrap, serving.predictions_topic))
                + len(read_all(kafka.bootstrap, serving.dead_letter_topic))) >= len(stream)

    wait_for("the predictor to answer every message", served_all, timeout=120)
    learner.stop()
    over_http = http_answers(serving, predictor.component, stream)  # type: ignore[arg-type]
    predictor.stop()

    state, expected = oracle(stream, learning.events_topic, [base_ms + i for i in range(len(stream))])
    for side, dlq, predictions in ((learning, learning.dead_letter_topic, learning.predictions_topic),
                                   (serving, serving.dead_letter_topic, serving.predictions_topic)):
        letters = Counter((int(m.headers["source.offset"]), m.headers["reason"].decode())
                          for m in read_all(kafka.bootstrap, dlq))
        predicted = Counter(int(m.json()["source"].rsplit("/", 1)[1])
                            for m in read_all(kafka.bootstrap, predictions))
        assert set(letters.values()) <= {1} and set(predicted.values()) <= {1}, side.model
        answered = {o for o, _ in letters} | set(predicted)
        assert answered == set(range(len(stream))) and not {o for o, _ in letters} & set(predicted)
        reasons = {o: r for o, r in letters}
        if side is learning:
            assert reasons == expected
        else:  # a frozen predictor neither learns nor checks classes: it refuses what the decoder does
            decoding = {o: r for o, r in expected.items() if r not in ("model_error", "new_class")}
            assert {o: r for o, r in reasons.items() if r != "model_error"} == decoding
            # POST /predict refuses what the events topic does, for the same reasons.
            assert {o: r for o, r in over_http.items() if r not in ("model_error", "ok")} == {
                o: r for o, r in decoding.items() if stream[o] is not None}
            assert {o for o, r in over_http.items() if r == "ok"} <= set(predicted)
    meta = latest_meta(learning)
    assert meta is not None and meta.learned == state.learned
    weights = state.model["LogisticRegression"].weights
    assert all(math.isfinite(w) for w in weights.values())
