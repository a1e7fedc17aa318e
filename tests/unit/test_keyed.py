"""Key scope's pure core: each key's model equals a River model trained in-process on that key's
events alone; the prior, the ttl, the cache's bound, the store's fencing and the signed records."""

from __future__ import annotations

import copy
import json
import os
import pickle
from typing import Any

import pytest
from river import linear_model, preprocessing

from stream_learner import key_records
from stream_learner.checkpoint import Record
from stream_learner.errors import FencedError, IntegrityError, InvalidEvent, OutOfOrder
from stream_learner.events import Event, Source
from stream_learner.key_cache import KeyCache
from stream_learner.key_records import key_slot, open_key, seal_key
from stream_learner.keyed import KeyedEngine, KeyModel, PartitionState, key_of
from stream_learner.state.keyed_base import PartitionSave
from stream_learner.state.keyed_memory import MemoryKeyedStore
from tools.events import dataset_rows, keyed_event_bytes

SPEC = "preprocessing.StandardScaler() | linear_model.LogisticRegression()"


def river_model() -> object:
    return preprocessing.StandardScaler() | linear_model.LogisticRegression()


def events(keys: int = 7, n: int = 600, step_ms: int = 1000) -> list[Event]:
    out = []
    for i, (key, event_id, raw) in enumerate(keyed_event_bytes(dataset_rows("Phishing")[:n], keys)):
        doc = json.loads(raw)
        out.append(Event(event_id, key, None, doc["x"], doc["y"], Source("events", 0, i, i * step_ms)))
    return out


Probas = list[dict[Any, float] | None]


def run(engine: KeyedEngine, stream: list[Event]) -> tuple[PartitionState, dict[str, KeyModel], Probas]:
    part, models, probas = engine.fresh_partition(), dict[str, KeyModel](), Probas()
    for e in stream:
        km = engine.model_for(part, models.get(e.key or ""), e)
        models[key_of(e)] = km
        probas.append(engine.process(part, km, e).proba)
    return part, models, probas


def test_each_keys_predictions_equal_a_river_model_of_that_keys_events_alone() -> None:
    stream = events()
    part, models, probas = run(KeyedEngine(SPEC), stream)
    oracles: dict[str, object] = {}
    for e, proba in zip(stream, probas, strict=True):
        oracle = oracles.setdefault(e.key or "", river_model())
        assert proba == oracle.predict_proba_one(e.x)  # type: ignore[attr-defined]
        oracle.learn_one(e.x, e.y)  # type: ignore[attr-defined]
    assert set(models) == set(oracles) and len(models) == 7
    assert sum(m.learned for m in models.values()) == part.learned == len(stream)
    assert part.keys_created == 7 and part.keys_expired == 0


def test_with_the_prior_a_new_key_starts_from_its_partitions_model_of_every_event() -> None:
    stream = events()
    _, models, probas = run(KeyedEngine(SPEC, prior="global"), stream)
    prior, oracles = river_model(), {}
    for e, proba in zip(stream, probas, strict=True):
        if e.key not in oracles:
            oracles[e.key] = copy.deepcopy(prior)
        oracle = oracles[e.key]
        assert proba == oracle.predict_proba_one(e.x)  # type: ignore[attr-defined]
        oracle.learn_one(e.x, e.y)  # type: ignore[attr-defined]
        prior.learn_one(e.x, e.y)  # type: ignore[attr-defined]
    assert all(m.learned == sum(1 for e in stream if e.key == k) for k, m in models.items())


def test_a_key_idle_past_the_ttl_starts_a_new_model() -> None:
    stream = events(keys=3, n=300, step_ms=1000)
    ttl_ms = 5000
    part, _, probas = run(KeyedEngine(SPEC, ttl_ms=ttl_ms), stream)
    oracles: dict[str, tuple[object, int]] = {}
    restarts = 0
    for e, proba in zip(stream, probas, strict=True):
        ts = e.source.timestamp_ms or 0
        oracle, last = oracles.get(e.key or "", (None, 0))
        if oracle is None or ts - last > ttl_ms:
            restarts += oracle is not None
            oracle = river_model()
        assert proba == oracle.predict_proba_one(e.x)  # type: ignore[attr-defined]
        oracle.learn_one(e.x, e.y)  # type: ignore[attr-defined]
        oracles[e.key or ""] = (oracle, ts)
    assert restarts > 0 and part.keys_expired == restarts and part.keys_created == 3 + restarts


def test_an_event_without_a_key_is_refused_by_name() -> None:
    with pytest.raises(InvalidEvent) as caught:
        key_of(Event("e", None, None, {"a": 1.0}, True, Source("events", 0, 0)))
    assert caught.value.reason == "missing_key"


def test_the_cache_keeps_changed_models_until_saved_and_the_least_recent_go_first() -> None:
    cache: KeyCache[int] = KeyCache(3)
    for i in range(4):
        cache.put(0, f"k{i}", i, changed=True)  # all dirty: none may go
    assert len(cache) == 4 and cache.evicted == 0
    cache.put(0, "clean", 9)  # the only one that may go, though the newest
    assert len(cache) == 4 and cache.evicted == 1
    cache.saved(0, ["k0", "k1", "k2"])
    assert len(cache) == 3 and cache.get(0, "k0") is None and cache.evicted == 2
    cache.get(0, "k1")
    cache.put(1, "x", 9)
    assert cache.get(0, "k2") is None and cache.get(0, "k1") == 1  # k2 was the least recent
    cache.drop(0)
    assert len(cache) == 1 and cache.get(1, "x") == 9


def test_a_model_read_from_the_store_ahead_counts_as_the_miss_when_first_asked_for() -> None:
    cache: KeyCache[int] = KeyCache(10)
    cache.put(0, "read", 1, read=True)  # a batch's read of the store
    cache.put(0, "made", 2)  # made here: no read
    assert (cache.get(0, "read"), cache.hits, cache.misses) == (1, 0, 1)
    assert (cache.get(0, "read"), cache.get(0, "made"), cache.hits, cache.misses) == (1, 2, 2, 1)
    assert (cache.get(0, "absent"), cache.misses) == (None, 2)


def _save(store: MemoryKeyedStore, version: int, token: int, models: dict[str, int], expire: int = 0) -> int:
    blobs = {k: f"model {k}".encode() for k in models}
    return store.save_partition("m", PartitionSave(0, version, token, Record(b"{}", b"", "s"), blobs, models,
                                                   expire))


def test_a_partitions_former_owner_is_fenced_and_versions_follow_each_other() -> None:
    store = MemoryKeyedStore()
    first = store.claim("m", 0)
    _save(store, 1, first, {"a": 10})
    second = store.claim("m", 0)  # a rebalance gave it to another learner
    with pytest.raises(FencedError):
        _save(store, 2, first, {"a": 20})
    with pytest.raises(OutOfOrder):
        _save(store, 3, second, {"a": 20})
    _save(store, 2, second, {"b": 30})
    assert store.key_models("m", 0, ["a", "b"]) == [b"model a", b"model b"]
    assert store.changed("m", 0, 1, 2) == ["b"] and store.changed("m", 0, 0, 2) == ["a", "b"]
    assert store.claim("m", 1) == 1  # partitions are fenced each on its own


def test_a_save_removes_the_keys_idle_past_the_cutoff_and_says_they_changed() -> None:
    store = MemoryKeyedStore()
    token = store.claim("m", 0)
    _save(store, 1, token, {"old": 1_000, "new": 9_000})
    assert _save(store, 2, token, {}, expire=5_000) == 1
    assert store.key_models("m", 0, ["old", "new"]) == [None, b"model new"]
    assert store.changed("m", 0, 1, 2) == ["old"] and store.key_count("m", 0) == 1


def test_a_key_record_verifies_only_in_its_own_slot_and_unpickles_only_allowed_classes() -> None:
    model = KeyedEngine(SPEC).fresh_model()
    slot = key_slot("m", 0, "alice")
    blob = seal_key(model, slot=slot, key_id="k1", secret=b"secret")
    assert open_key(blob, slot=slot, keys={"k1": b"secret"}).learned == 0
    # Any character may be in a model's name or a key: no two slots are written alike.
    assert key_slot("m", 0, "1#k") != key_slot("m#0", 1, "k")
    for wrong in (key_slot("m", 1, "alice"), key_slot("n", 0, "alice"), key_slot("m", 0, "bob")):
        with pytest.raises(IntegrityError, match="signature does not match"):
            open_key(blob, slot=wrong, keys={"k1": b"secret"})
    with pytest.raises(IntegrityError, match="signature does not match"):
        open_key(blob[:-1] + bytes([blob[-1] ^ 1]), slot=slot, keys={"k1": b"secret"})
    # Signed with the key, and hostile all the same: only River's and our classes unpickle.
    runtime = key_records._runtime()
    payload = pickle.dumps(Hostile())
    mac = key_records._mac(b"secret", slot, runtime, payload)
    hostile = b"".join((key_records.MAGIC, b"\x02", b"k1", mac, bytes([len(runtime)]), runtime, payload))
    with pytest.raises(IntegrityError, match="system"):
        open_key(hostile, slot=slot, keys={"k1": b"secret"})


class Hostile:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, ("echo pwned",)
