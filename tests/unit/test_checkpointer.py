"""The checkpointer's protocol (plan -> flush -> write fenced -> commit) with the in-memory
store and the in-memory twins of the Kafka clients: no Kafka, no Redis."""

from __future__ import annotations

import time

import pytest

from consumers.checkpointer import Checkpointer, Cursor, Plan
from consumers.clients.memory import MemoryBroker, MemoryConsumer, MemoryProducer
from consumers.kafka_io import Publisher
from stream_learner.checkpoint import CheckpointMeta, Record, open_record
from stream_learner.config import Settings
from stream_learner.engine import ModelState
from stream_learner.errors import FencedError, StoreUnavailable
from stream_learner.state.memory import MemoryStore

SETTINGS = Settings(model="m", hmac_key="k" * 32, checkpoint_every=10, checkpoint_interval=3600.0,
                    predictions_topic="predictions")
SPEC = "preprocessing.StandardScaler() | linear_model.LogisticRegression()"


class StreamTwin:
    """The loop, as the checkpointer sees it: a model, where it stands, what it heard."""

    def __init__(self) -> None:
        self.state = ModelState.fresh(SPEC)
        self.offsets: dict[tuple[str, int], int] = {}
        self.saves: list[tuple[Plan, CheckpointMeta, bytes | None]] = []

    def cursor(self) -> Cursor:
        return Cursor(dict(self.offsets), sum(self.offsets.values()), {}, seq=sum(self.offsets.values()))

    def saved(self, plan: Plan, meta: CheckpointMeta, payload: bytes | None, *, nbytes: int,
              pause_s: float) -> None:
        assert nbytes > 0 and pause_s >= 0
        self.saves.append((plan, meta, payload))


class FlakyStore(MemoryStore):
    """A store whose next ``fail`` saves raise ``StoreUnavailable``; ``lands``: the save is
    written all the same, as when the answer of a save that landed is lost."""

    def __init__(self) -> None:
        super().__init__()
        self.fail = 0
        self.lands = False

    def save(self, model: str, version: int, record: Record, token: int, keep: int, *,
             serve: bool = True, reclaim: bool = False) -> None:
        if self.fail:
            self.fail -= 1
            if self.lands:
                super().save(model, version, record, token, keep, serve=serve, reclaim=reclaim)
            raise StoreUnavailable("Redis timed out while saving")
        super().save(model, version, record, token, keep, serve=serve, reclaim=reclaim)


def setup(store: MemoryStore | None = None) -> tuple[Checkpointer, StreamTwin, MemoryProducer, MemoryStore]:
    store = store if store is not None else MemoryStore()
    token = store.acquire("m", ttl=60.0, owner="a")
    assert token is not None
    stream, producer = StreamTwin(), MemoryProducer(MemoryBroker())
    publisher = Publisher(producer, SETTINGS)
    checkpointer = Checkpointer(SETTINGS, store, stream, publisher=publisher, token=token,
                                resumed=CheckpointMeta("m", 0, {}))
    return checkpointer, stream, producer, store


def learn(checkpointer: Checkpointer, stream: StreamTwin, n: int) -> None:
    """The loop handled ``n`` records of events/0, each with a prediction sent."""
    for _ in range(n):
        checkpointer.publisher.prediction("k", b"{}")
        stream.offsets["events", 0] = stream.offsets.get(("events", 0), 0) + 1
        checkpointer.since += 1


def latest(store: MemoryStore) -> CheckpointMeta:
    return open_record(store.load("m"), SETTINGS.signing_keys()).meta


def test_a_checkpoint_covers_the_cursor_and_the_acknowledged_sends() -> None:
    checkpointer, stream, _, store = setup()
    learn(checkpointer, stream, 12)
    assert checkpointer.due()
    checkpointer.write("interval")
    meta = latest(store)
    assert (meta.version, meta.offsets, meta.events) == (1, {"events:0": 12}, 12)
    assert meta.published == {"predictions:0": 12} and meta.token == checkpointer.token
    assert checkpointer.version == 1 and [p.version for p, _, _ in stream.saves] == [1]
    assert checkpointer.since == 0 and not checkpointer.due()


def test_off_the_loop_nothing_is_written_before_every_send_of_the_plan_is_acknowledged() -> None:
    checkpointer, stream, producer, store = setup()
    learn(checkpointer, stream, 10)
    producer.acking = False
    checkpointer.start("interval")
    learn(checkpointer, stream, 5)  # after the plan: not in it
    for _ in range(20):
        checkpointer.advance()
    flight = checkpointer.background
    assert flight is not None and not flight.writer.released  # not handed to the writer yet
    assert store.latest_version("m") == 0
    producer.acking = True
    deadline = time.monotonic() + 10
    while checkpointer.background is not None and time.monotonic() < deadline:
        checkpointer.advance()
    meta = latest(store)
    assert (meta.version, meta.offsets) == (1, {"events:0": 10})
    assert checkpointer.since == 5  # the events after the plan wait for the next checkpoint


def test_a_store_outage_is_retried_with_backoff_and_then_written() -> None:
    store = FlakyStore()
    checkpointer, stream, _, _ = setup(store)
    learn(checkpointer, stream, 10)
    store.fail = 2
    checkpointer.write("interval")
    assert checkpointer.failures == 1 and store.latest_version("m") == 0
    assert not checkpointer.due()  # not before retry_at
    first_delay = checkpointer.retry_at - time.monotonic()
    checkpointer.retry_at = 0.0
    checkpointer.write("interval")
    assert checkpointer.failures == 2 and checkpointer.retry_at - time.monotonic() > first_delay
    checkpointer.write("interval")
    assert latest(store).version == 1 and latest(store).checkpoint_failures == 2


def test_a_save_that_landed_though_its_answer_was_lost_is_followed_not_repeated() -> None:
    store = FlakyStore()
    checkpointer, stream, _, _ = setup(store)
    learn(checkpointer, stream, 10)
    store.fail, store.lands = 1, True
    checkpointer.write("interval")  # landed as v1, answered with a timeout
    assert store.latest_version("m") == 1 and checkpointer.version == 0
    checkpointer.write("interval")  # v1 again: out of order, and v1 is this writer's
    assert checkpointer.version == 1 and not stream.saves
    learn(checkpointer, stream, 1)
    checkpointer.write("interval")
    assert latest(store).version == 2 and latest(store).offsets == {"events:0": 11}


def test_a_writer_whose_lease_was_taken_over_is_fenced() -> None:
    checkpointer, stream, _, store = setup()
    store.leases.clear()  # its lease expired, and another learner took it
    assert store.acquire("m", ttl=60.0, owner="b") is not None
    learn(checkpointer, stream, 10)
    with pytest.raises(FencedError):
        checkpointer.write("interval")
    assert store.latest_version("m") == 0


def test_kafka_hears_the_offsets_of_the_assigned_partitions_once() -> None:
    checkpointer, stream, _, _ = setup()
    stream.offsets["other", 3] = 4
    learn(checkpointer, stream, 10)
    checkpointer.write("interval")
    broker = MemoryBroker()
    consumer = MemoryConsumer(broker)
    consumer.assign({("events", 0): 0})
    checkpointer.commit(consumer, wait=False)
    assert broker.committed == {("events", 0): 10}
    broker.committed.clear()
    checkpointer.commit(consumer, wait=False)  # nothing new since
    assert broker.committed == {}
