"""The keyed store's rules in real Redis, as its in-memory twin keeps them (tests/unit/test_keyed.py):
fencing and order per partition, the sweep of idle keys, the changed keys, one hash slot."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from redis.crc import key_slot

from stream_learner.checkpoint import Record
from stream_learner.errors import FencedError, OutOfOrder
from stream_learner.state.keyed_base import CHANGES_KEPT, KeyedStore, PartitionSave
from stream_learner.state.keyed_memory import MemoryKeyedStore
from stream_learner.state.keyed_redis import SUFFIXES, RedisKeyedStore
from stream_learner.state.redis import RedisStore
from tools.localstack import RedisServer


@pytest.fixture(params=["redis", "memory"])
def store(request: pytest.FixtureRequest, redis_server: RedisServer, unique: Callable[[str], str]
          ) -> KeyedStore:
    if request.param == "memory":
        return MemoryKeyedStore()
    return RedisKeyedStore(redis_server.url, unique("sl"))


def save(store: KeyedStore, version: int, token: int, seen: dict[str, int], expire: int = 0,
         partition: int = 0) -> int:
    models = {k: f"model {k} v{version}".encode() for k in seen}
    record = Record(b"{}", b"p", "s")
    return store.save_partition("m", PartitionSave(partition, version, token, record, models, seen, expire))


def test_each_partition_is_fenced_and_ordered_on_its_own(store: KeyedStore) -> None:
    first = store.claim("m", 0)
    save(store, 1, first, {"a": 10})
    second = store.claim("m", 0)
    with pytest.raises(FencedError):
        save(store, 2, first, {"a": 20})
    with pytest.raises(OutOfOrder):
        save(store, 3, second, {"a": 20})
    save(store, 2, second, {"b": 30})
    other = store.claim("m", 1)
    save(store, 1, other, {"a": 5}, partition=1)
    assert store.versions("m", [0, 1, 2]) == {0: 2, 1: 1, 2: 0}
    assert store.key_models("m", 0, ["a", "b", "c"]) == [b"model a v1", b"model b v2", None]
    assert store.key_models("m", 1, ["a"]) == [b"model a v1"]
    record = store.partition("m", 0)
    assert record is not None and (record.payload, record.version, record.model) == (b"p", 2, "m#0")


def test_a_save_removes_the_idle_keys_and_predictors_hear_which_keys_changed(store: KeyedStore) -> None:
    token = store.claim("m", 0)
    save(store, 1, token, {"old": 1_000, "mid": 4_000, "new": 9_000})
    assert save(store, 2, token, {"new": 9_500}, expire=5_000) == 2
    assert store.key_names("m", 0) == ["new"] and store.key_count("m", 0) == 1
    assert store.changed("m", 0, 1, 2) == ["mid", "new", "old"]
    assert store.changed("m", 0, 0, 1) == []  # each key's latest change is v2 now
    assert store.changed("m", 0, 0, CHANGES_KEPT + 2) is None  # further back than is kept


def test_one_partitions_keys_share_one_cluster_slot() -> None:
    store = RedisKeyedStore("redis://127.0.0.1:1/0", "sl")  # naming keys needs no server
    slots = {key_slot(store.key("m", 3, suffix).encode())
             for suffix in SUFFIXES}
    assert len(slots) == 1
    assert key_slot(store.key("m", 4, "meta").encode()) not in slots
    global_keys = {RedisStore("redis://127.0.0.1:1/0", "sl").key("m#3", suffix)
                   for suffix in ("fence", "lease", "versions", "latest", "request", "serving", "tags")}
    assert not global_keys & {store.key("m", 3, suffix) for suffix in SUFFIXES}


def test_a_reset_partition_starts_afresh_and_fences_its_owner(store: KeyedStore) -> None:
    owner = store.claim("m", 0)
    save(store, 1, owner, {"a": 10, "b": 20})
    store.claim("m*", 2)  # a glob character in a name is matched literally
    store.claim("m#1", 1)
    assert store.models() == ["m", "m#1", "m*"]
    assert (store.partitions("m"), store.partitions("m*"), store.partitions("m#1")) == ([0], [2], [1])
    assert store.reset_partition("m", 0) == 2
    with pytest.raises(FencedError):  # the owner, still running, cannot write over the reset
        save(store, 1, owner, {"a": 30})
    assert store.partition("m", 0) is None and store.versions("m", [0]) == {0: 0}
    assert store.key_models("m", 0, ["a"]) == [None]
    save(store, 1, store.claim("m", 0), {"c": 40})
    assert store.key_names("m", 0) == ["c"]


def test_glob_characters_in_a_prefix_are_matched_literally(redis_server: RedisServer,
                                                           unique: Callable[[str], str]) -> None:
    base = unique("sl")
    url, odd_prefix, plain_prefix = redis_server.url, base + "[l]*", base + "l"
    odd, plain = RedisKeyedStore(url, odd_prefix), RedisKeyedStore(url, plain_prefix)
    global_odd, global_plain = RedisStore(url, odd_prefix), RedisStore(url, plain_prefix)
    plain.claim("other", 0)
    global_plain.client.set(global_plain.key("other", "latest"), 1)
    odd.claim("m?", 1)
    # As SCAN patterns, the odd prefix would match the plain one's keys.
    assert odd.models() == ["m?"] and odd.partitions("m?") == [1]
    assert global_odd.models() == []
