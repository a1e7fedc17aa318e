"""The key-scope learner on the in-memory twins of Kafka and of the store: each key's
predictions and final model equal a River model trained in-process on that key's events alone,
across a restart, with a cache smaller than the keys."""

from __future__ import annotations

import json
import threading
from collections import Counter
from dataclasses import replace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from river import linear_model, preprocessing

from consumers.clients.memory import MemoryBroker, MemoryClients
from consumers.key_learner import KeyLearner
from stream_learner.config import Settings
from stream_learner.key_records import key_slot, open_key, open_partition
from stream_learner.state.keyed_memory import MemoryKeyedStore
from tests.unit.test_learner_loop import wait_for
from tools.events import dataset_rows, keyed_event_bytes

SPEC = "preprocessing.StandardScaler() | linear_model.LogisticRegression()"
SETTINGS = Settings(model="m", model_spec=SPEC, hmac_key="k" * 32, instance_id="twin", model_scope="key",
                    events_topic="events", predictions_topic="predictions", dead_letter_topic="dlq",
                    checkpoint_every=50, checkpoint_interval=0.2, key_cache_size=4, progress_interval=3600.0)
PARTITIONS = 3


def learned(store: MemoryKeyedStore) -> int:
    total = 0
    for p in range(PARTITIONS):
        record = store.partition("m", p)
        if record is not None:
            total += open_partition(record, SETTINGS.signing_keys())[1].learned
    return total


def run_until(store: MemoryKeyedStore, broker: MemoryBroker, events: int, settings: Settings = SETTINGS
              ) -> KeyLearner:
    learner = KeyLearner(settings, store, MemoryClients(broker))
    stop, failed = threading.Event(), []

    def run() -> None:
        try:
            learner.run(stop)
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        wait_for(f"checkpoints of {events} events", lambda: not failed and learned(store) >= events)
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive() and not failed, failed
    return learner


def oracles(stream: list[tuple[str, str, bytes]]) -> tuple[dict[str, list[dict[str, float]]], dict[str, Any]]:
    probas: dict[str, list[dict[str, float]]] = {}
    models: dict[str, Any] = {}
    for key, _, raw in stream:
        doc = json.loads(raw)
        model = models.setdefault(key, preprocessing.StandardScaler() | linear_model.LogisticRegression())
        proba = model.predict_proba_one(doc["x"])
        probas.setdefault(key, []).append({str(c).lower(): p for c, p in proba.items()})
        model.learn_one(doc["x"], doc["y"])
    return probas, models


def test_each_key_learns_its_own_events_exactly_once_across_a_restart() -> None:
    broker, store = MemoryBroker(), MemoryKeyedStore()
    broker.create("events", PARTITIONS)
    stream = keyed_event_bytes(dataset_rows("Phishing")[:500], keys=12)
    for key, _, raw in stream[:300]:
        broker.append("events", raw, key.encode())
    first = run_until(store, broker, 300)
    assert first.cache.evicted > 0  # 12 keys through a cache of 4
    # Its figures are its own: every key and event was new to it.
    assert (first.engine.learned, first.engine.keys_created) == (300, 12)
    assert first.cache.hits + first.cache.misses == 300
    for key, _, raw in stream[300:]:
        broker.append("events", raw, key.encode())
    second = run_until(store, broker, 500)
    assert (second.engine.learned, second.engine.keys_created) == (200, 0)  # not the partitions' 500, 12
    assert second.board.snapshot().outcomes["learned"] == 200
    # A fresh cache: each of the 12 keys was read from the store at least once, a miss each time.
    assert second.cache.hits + second.cache.misses == 200 and second.cache.misses >= 12

    probas, models = oracles(stream)
    published = [json.loads(r.value() or b"") for part in broker.topics["predictions"] for r in part]
    assert Counter(p["id"] for p in published) == Counter(event_id for _, event_id, _ in stream)
    by_key: dict[str, list[dict[str, Any]]] = {}
    for p in sorted(published, key=lambda p: int(p["id"].split("-")[1])):
        by_key.setdefault(p["key"], []).append(p)
    assert {k: [p["proba"] for p in ps] for k, ps in by_key.items()} == probas
    for key, oracle in models.items():
        partition = next(p for p in range(PARTITIONS) if store.key_models("m", p, [key])[0] is not None)
        blob = store.key_models("m", partition, [key])[0]
        assert blob is not None
        saved = open_key(blob, slot=key_slot("m", partition, key), keys=SETTINGS.signing_keys())
        assert saved.learned == len(probas[key])
        assert saved.model["LogisticRegression"].weights == oracle["LogisticRegression"].weights


def test_an_event_without_a_key_is_dead_lettered_once_with_its_reason() -> None:
    broker, store = MemoryBroker(), MemoryKeyedStore()
    broker.create("events", 1)
    broker.append("events", json.dumps({"id": "no-key", "x": {"a": 1.0}, "y": True}).encode())
    for key, _, raw in keyed_event_bytes(dataset_rows("Phishing")[:20], keys=2):
        broker.append("events", raw, key.encode())
    learner = run_until(store, broker, 20, replace(SETTINGS, key_cache_size=100))
    letters = [dict(r.headers() or []) for part in broker.topics["dlq"] for r in part]
    assert [h["reason"] for h in letters] == [b"missing_key"]
    assert learner.letters is not None and learner.letters.counts == {"missing_key": 1}


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(max_size=300), min_size=1, max_size=40))
def test_any_string_is_a_key_of_its_own(keys: list[str]) -> None:
    """Empty, huge, NUL, '#', '{', '}', any script: each key's events go to its model alone."""
    broker, store = MemoryBroker(), MemoryKeyedStore()
    broker.create("events", PARTITIONS)
    expected: Counter[str] = Counter()
    for i, key in enumerate(keys):
        if any(0xD800 <= ord(c) <= 0xDFFF for c in key):
            continue  # lone surrogates are not UTF-8: refused as bad_utf8, tested elsewhere
        raw = json.dumps({"id": f"e-{i}", "key": key, "x": {"a": float(i)}, "y": i % 2 == 0}).encode()
        broker.append("events", raw, key.encode())
        expected[key] += 1
    small = replace(SETTINGS, model_spec="linear_model.LogisticRegression()")
    run_until(store, broker, sum(expected.values()), small)
    found: Counter[str] = Counter()
    for p in range(PARTITIONS):
        names = store.key_names("m", p)
        for name, blob in zip(names, store.key_models("m", p, names), strict=True):
            assert blob is not None
            found[name] += open_key(blob, slot=key_slot("m", p, name), keys=SETTINGS.signing_keys()).learned
    assert found == expected
