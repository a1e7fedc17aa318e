"""The checkpoint writers on a real Redis, forked and pickled in the loop alike: each saves the
state as it was at the snapshot, only once released, and reports what stopped it."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable

import pytest
from river import datasets

from consumers.background_checkpoint import BackgroundCheckpoint, ForkedCheckpoint, PickledCheckpoint
from stream_learner.checkpoint import CheckpointMeta, open_record
from stream_learner.engine import Engine, ModelState
from stream_learner.errors import FencedError, StoreUnavailable
from stream_learner.events import Event, Source
from stream_learner.state.base import SaveRules
from stream_learner.state.redis import RedisStore
from tools.localstack import RedisServer

SPEC = "preprocessing.StandardScaler() | linear_model.LogisticRegression()"
KEYS = {"k": b"secret"}
WRITERS = pytest.mark.parametrize("kind", [ForkedCheckpoint, PickledCheckpoint],
                                  ids=["forked", "pickled"])
Kind = type[ForkedCheckpoint] | type[PickledCheckpoint]


def trained(events: int) -> tuple[ModelState, Engine]:
    state = ModelState.fresh(SPEC)
    engine = Engine(state)
    feed(engine, 0, events)
    return state, engine


def feed(engine: Engine, start: int, stop: int) -> None:
    rows = list(datasets.Phishing())
    for i in range(start, stop):
        x, y = rows[i % len(rows)]
        engine.process(Event(f"e-{i}", None, None, x, y, Source("t", 0, i)))


def start(kind: Kind, store: RedisStore, state: ModelState, token: int) -> BackgroundCheckpoint:
    meta = CheckpointMeta("m", 1, {"t:0": state.learned}, events=state.learned, token=token)
    if kind is ForkedCheckpoint:
        return ForkedCheckpoint.start(state, meta, store, "k", KEYS["k"], keep=SaveRules(3))
    writer = PickledCheckpoint.start(state, meta, store, "k", KEYS["k"], keep=SaveRules(3), limit=1 << 20)
    assert writer is not None
    return writer


def test_a_state_that_outgrows_the_limit_is_not_pickled_in_the_loop(
        redis_server: RedisServer, unique: Callable[[str], str]) -> None:
    store = RedisStore(redis_server.url, unique("p"))
    token = store.acquire("m", ttl=30)
    assert token is not None
    state, _ = trained(50)
    size = len(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))
    meta = CheckpointMeta("m", 1, {"t:0": 50}, events=50, token=token)
    rules = SaveRules(3)
    assert PickledCheckpoint.start(state, meta, store, "k", KEYS["k"], keep=rules, limit=size - 1) is None
    writer = PickledCheckpoint.start(state, meta, store, "k", KEYS["k"], keep=rules, limit=size)
    assert writer is not None
    writer.release({})
    assert writer.wait().payload_bytes == size
    saved = open_record(store.load("m"), KEYS)
    assert saved.state.learned == saved.meta.learned == 50 and "LogLoss" in saved.meta.metrics
    assert meta.metrics == {} and meta.learned == 0  # the caller's header is never changed
    store.close()


@WRITERS
def test_the_writer_saves_the_state_of_the_snapshot_while_the_loop_learns_on(
        kind: Kind, redis_server: RedisServer, unique: Callable[[str], str]) -> None:
    store = RedisStore(redis_server.url, unique("p"))
    token = store.acquire("m", ttl=30)
    assert token is not None
    state, engine = trained(300)
    at_fork = pickle.dumps(state)
    oracle, _ = trained(300)
    writer = start(kind, store, state, token)
    feed(engine, 300, 600)  # the loop goes on while the writer waits
    assert store.latest_version("m") == 0  # not released yet: nothing written
    writer.release({"predictions:0": 42})
    outcome = writer.wait()
    assert outcome.error is None and outcome.payload_bytes > 0
    assert outcome.metrics is not None and outcome.metrics["Accuracy"] is not None

    saved = open_record(store.load("m"), KEYS)
    assert saved.meta.version == 1 and saved.meta.offsets == {"t:0": 300}
    assert saved.meta.published == {"predictions:0": 42}
    assert saved.state.learned == 300 and state.learned == 600
    # the exact state of the snapshot, not the later one (both pickled after one round trip)
    assert pickle.dumps(saved.state) == pickle.dumps(pickle.loads(at_fork))
    assert saved.state.digest == oracle.digest
    store.close()


@WRITERS
def test_an_aborted_writer_writes_nothing_and_is_gone(kind: Kind, redis_server: RedisServer,
                                                      unique: Callable[[str], str]) -> None:
    store = RedisStore(redis_server.url, unique("p"))
    token = store.acquire("m", ttl=30)
    assert token is not None
    state, _ = trained(50)
    writer = start(kind, store, state, token)
    writer.abort()
    assert writer.outcome is not None and writer.outcome.error is not None
    assert store.latest_version("m") == 0
    assert_reaped(writer)
    store.close()


@WRITERS
def test_the_writer_of_a_learner_that_lost_its_lease_is_fenced(kind: Kind, redis_server: RedisServer,
                                                               unique: Callable[[str], str]) -> None:
    store = RedisStore(redis_server.url, unique("p"))
    token = store.acquire("m", ttl=30, owner="a")
    assert token is not None
    state, _ = trained(50)
    writer = start(kind, store, state, token)
    assert store.acquire("m", ttl=30, owner="a") is not None  # a restart of "a" took over
    writer.release({})
    assert isinstance(writer.wait().error, FencedError)
    assert store.latest_version("m") == 0
    store.close()


@WRITERS
def test_a_store_outage_is_reported_as_such(kind: Kind, unique: Callable[[str], str]) -> None:
    store = RedisStore("redis://127.0.0.1:1/0", unique("p"), socket_connect_timeout=0.5)
    state, _ = trained(50)
    writer = start(kind, store, state, token=1)
    writer.release({})
    assert isinstance(writer.wait().error, StoreUnavailable)
    assert_reaped(writer)


def assert_reaped(writer: BackgroundCheckpoint) -> None:
    if not writer.pid:
        return  # a thread: nothing to reap
    try:
        os.waitpid(writer.pid, os.WNOHANG)
    except ChildProcessError:
        return
    raise AssertionError(f"child {writer.pid} was not reaped")
