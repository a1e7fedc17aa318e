"""The Redis store on a real server: chunked records, limits, retention, announcements."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
import redis

from stream_learner.checkpoint import Record
from stream_learner.errors import CheckpointError, NoCheckpoint, StoreUnavailable
from stream_learner.state.redis import RedisStore
from tools.localstack import RedisServer


def test_large_checkpoints_are_chunked_and_reassembled(redis_server: RedisServer,
                                                       unique: Callable[[str], str]) -> None:
    store = RedisStore(redis_server.url, unique("p"), chunk_bytes=1024 * 1024, max_bytes=8 * 1024 * 1024)
    token = store.acquire("m", ttl=10)
    assert token is not None
    payload = os.urandom(5 * 1024 * 1024 + 17)
    store.save("m", 1, Record(b'{"h": 1}', payload, "sig"), token, keep=2)
    assert int(store.client.hget(store.key("m", "v:1"), "chunks") or 0) == 6
    assert store.load("m") == Record(b'{"h": 1}', payload, "sig", "m", 1)  # with the slot it came from

    with pytest.raises(CheckpointError, match="exceeds the limit of 8388608 bytes"):
        store.save("m", 2, Record(b"{}", os.urandom(9 * 1024 * 1024), "sig"), token, keep=2)
    assert store.latest_version("m") == 1
    store.close()


def test_retention_and_announcements(redis_server: RedisServer, unique: Callable[[str], str]) -> None:
    prefix = unique("p")
    store = RedisStore(redis_server.url, prefix)
    token = store.acquire("m", ttl=10)
    assert token is not None
    listener = redis.Redis.from_url(redis_server.url).pubsub()  # type: ignore[no-untyped-call]
    listener.subscribe(store.key("m", "announce"))
    assert listener.get_message(timeout=5)["type"] == "subscribe"
    for version in range(1, 6):
        store.save("m", version, Record(b"{}", b"p%d" % version, "s"), token, keep=2)
    assert store.versions("m") == [4, 5]
    assert not store.client.exists(store.key("m", "v:3"))
    with pytest.raises(NoCheckpoint):
        store.load("m", 3)
    announced = [listener.get_message(timeout=5) for _ in range(5)]
    assert [int(m["data"]) for m in announced if m] == [1, 2, 3, 4, 5]
    listener.close()
    store.close()


def test_an_unreachable_server_is_a_clear_error() -> None:
    store = RedisStore("redis://127.0.0.1:1/0")
    with pytest.raises(StoreUnavailable, match="Redis unreachable while reading the latest version"):
        store.latest_version("m")


def test_keys_written_by_hand_are_clear_errors_and_a_huge_record_is_not_read(
        redis_server: RedisServer, unique: Callable[[str], str]) -> None:
    store = RedisStore(redis_server.url, unique("p"), chunk_bytes=1024, max_bytes=8 * 1024)
    token = store.acquire("m", ttl=10)
    assert token is not None
    store.save("m", 1, Record(b"{}", b"x" * 100, "sig"), token, keep=2)
    client = store.client
    client.set(store.key("m", "latest"), "abc")
    with pytest.raises(CheckpointError, match=r"latest holds b'abc', not a number"):
        store.latest_version("m")
    with pytest.raises(CheckpointError, match="latest holds no number"):
        store.save("m", 2, Record(b"{}", b"", "sig"), token, keep=2)
    client.set(store.key("m", "latest"), "1")
    client.set(store.key("m", "fence"), "abc")
    with pytest.raises(CheckpointError, match="fence holds no number"):
        store.renew("m", token, 10)
    with pytest.raises(CheckpointError, match="fence holds no number"):
        store.save("m", 2, Record(b"{}", b"", "sig"), token, keep=2)
    client.zadd(store.key("m", "versions"), {"abc": 3})
    with pytest.raises(CheckpointError, match="versions holds b'abc'"):
        store.versions("m")
    hash_key = store.key("m", "v:1")
    client.hset(hash_key, mapping={"chunks": 9, **{f"payload:{i}": b"y" * 1024 for i in range(9)}})
    with pytest.raises(CheckpointError, match="9216 bytes, beyond the limit of 8192 bytes: not read"):
        store.load("m", 1)
    client.hset(hash_key, "chunks", 10**6)
    with pytest.raises(CheckpointError, match="1000000 chunks"):
        store.load("m", 1)
    store.close()
