"""The continually-learning consumer (``stream-learner learn``).

Checkpoint protocol (docs/operations.md): flush the producer and check every send ->
write the signed checkpoint with the next offset of every partition, atomically and
fenced -> commit those offsets to Kafka (for lag monitoring only). On start and on every
assignment the consumer seeks to the checkpoint's offsets, so each labelled event is
learned exactly once across crashes, and predictions are published at least once.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition

from consumers.kafka_io import Publisher, commit, make_consumer, make_producer, process_record
from stream_learner.checkpoint import CheckpointMeta, open_record, seal_record, tp_key
from stream_learner.config import Settings
from stream_learner.engine import Engine, ModelState
from stream_learner.errors import NoCheckpoint, StoreUnavailable
from stream_learner.events import FieldNames
from stream_learner.store import ModelStore

log = logging.getLogger("stream_learner.learner")


def field_names(settings: Settings) -> FieldNames:
    return FieldNames(settings.id_field, settings.key_field, settings.ts_field, settings.x_field,
                      settings.y_field)


def signing_keys(settings: Settings) -> dict[str, bytes]:
    return {settings.hmac_key_id: settings.hmac_key.encode()}


class Learner:
    """One learner per model: it alone writes the model's checkpoints (fencing token)."""

    def __init__(self, settings: Settings, store: ModelStore) -> None:
        self.settings = settings
        self.store = store
        self.fields = field_names(settings)
        self.offsets: dict[str, int] = {}  # tp_key -> next offset, consistent with self.state
        self.events = 0
        self.dead_letters: dict[str, int] = {}  # carried across restarts by the checkpoint
        self.since_checkpoint = 0
        self.last_checkpoint = time.monotonic()
        self.version = 0
        self.token = 0
        self.state: ModelState | None = None
        self.engine: Engine | None = None
        self.consumer: KafkaConsumer | None = None
        self.publisher: Publisher | None = None

    def restore(self) -> None:
        """Take the fencing token, then load the latest checkpoint or build a fresh model."""
        s = self.settings
        self.token = self.store.acquire(s.model)
        try:
            ckpt = open_record(self.store.load(s.model), signing_keys(s))
        except NoCheckpoint:
            self.state = ModelState.fresh(s.model_spec, s.task, s.rolling_window)
            log.info("model %s: no checkpoint, starting fresh from %s", s.model, s.start_from)
        else:
            self.state, self.version = ckpt.state, ckpt.meta.version
            self.offsets, self.events = dict(ckpt.meta.offsets), ckpt.meta.events
            self.dead_letters = dict(ckpt.meta.dead_letters)
            log.info("model %s: resumed v%d (%d learned) at %s", s.model, self.version,
                     self.state.learned, self.offsets)
        self.engine = Engine(self.state, model_name=s.model, mode="learn", version=self.version)

    def run(self, stop: threading.Event) -> None:
        self.restore()
        self.consumer = make_consumer(self.settings, "learn")
        self.publisher = Publisher(make_producer(self.settings, "stream-learner-learn"), self.settings,
                                   self.dead_letters)
        self.consumer.subscribe([self.settings.events_topic], listener=_Rebalance(self))
        try:
            while not stop.is_set():
                batch = self.consumer.poll(timeout_ms=200)
                for records in batch.values():
                    for record in records:
                        self.handle(record)
                if self.checkpoint_due():
                    self.checkpoint("interval")
            self.checkpoint("shutdown")
        finally:
            self.consumer.close(autocommit=False)
            self.publisher.producer.close(timeout=10)

    def handle(self, record: Any) -> None:
        assert self.engine is not None and self.publisher is not None
        process_record(record, self.engine, self.publisher, self.fields, self.settings.max_event_bytes)
        self.offsets[tp_key(record.topic, record.partition)] = record.offset + 1
        self.events += 1
        self.since_checkpoint += 1

    def checkpoint_due(self) -> bool:
        s = self.settings
        return self.since_checkpoint >= s.checkpoint_every or (
            self.since_checkpoint > 0 and time.monotonic() - self.last_checkpoint >= s.checkpoint_interval)

    def checkpoint(self, reason: str, in_listener: bool = False) -> None:
        """Flush -> save (fenced, atomic) -> commit. A store outage is retried next time."""
        assert self.state is not None and self.publisher is not None and self.consumer is not None
        if self.since_checkpoint == 0:
            return
        s = self.settings
        self.publisher.flush()
        version = self.version + 1
        meta = CheckpointMeta(s.model, version, dict(self.offsets), events=self.events,
                              dead_letters=dict(self.dead_letters),
                              token=self.token)
        record = seal_record(self.state, meta, s.hmac_key_id, s.hmac_key.encode())
        try:
            self.store.save(s.model, version, record, self.token, s.keep_versions)
        except StoreUnavailable as exc:
            log.error("checkpoint v%d failed, will retry: %s", version, exc)
            self.last_checkpoint = time.monotonic()
            return
        self.version = version
        assert self.engine is not None
        self.engine.version = version
        self.since_checkpoint = 0
        self.last_checkpoint = time.monotonic()
        assigned = self.consumer.assignment()
        commit(self.consumer, {tp: self.offsets[tp_key(tp.topic, tp.partition)]
                               for tp in assigned if tp_key(tp.topic, tp.partition) in self.offsets},
               in_listener=in_listener)
        log.info("checkpoint v%d (%s): %d events, %d learned, %d bytes, metrics %s", version, reason,
                 self.events, self.state.learned, len(record.payload), meta.metrics)

    def seek(self, partitions: list[TopicPartition]) -> None:
        """Position each assigned partition at the checkpoint's offset, or at start_from."""
        assert self.consumer is not None
        fresh = []
        for tp in partitions:
            offset = self.offsets.get(tp_key(tp.topic, tp.partition))
            if offset is None:
                fresh.append(tp)
            else:
                self.consumer.seek(tp, offset)
        if fresh:
            if self.settings.start_from == "earliest":
                self.consumer.seek_to_beginning(*fresh)
            else:
                self.consumer.seek_to_end(*fresh)
        log.info("assigned %s", sorted((tp.topic, tp.partition) for tp in partitions))


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, learner: Learner) -> None:
        self.learner = learner

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        if revoked:
            self.learner.checkpoint("revocation", in_listener=True)

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.learner.seek(assigned)
