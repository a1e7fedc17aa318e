"""The frozen predictor under key scope (``stream-learner serve --model-scope key``).

Inference only, like the global predictor: it never learns and never writes the store. Each
event is answered by its key's model as the store has it (``consumers.frozen_keys``), read
through a cache and followed to each new version of its partition between two poll batches.
A key the store has no model of is answered by what the learner would start it from. Offsets
are committed after the producer is flushed: every event is predicted at least once.
``POST /predict`` answers by key the same way, looking the key up in every partition.
"""

from __future__ import annotations

import logging
import socket
import threading
import time

from consumers.clients.base import BROKER_DEFAULT_RECORD_BYTES, Clients, Consumer, Record
from consumers.dead_letters import Author, DeadLetters
from consumers.frozen_keys import FrozenKeys
from consumers.kafka_io import Poller, Publisher, source_of
from consumers.key_batches import RETRY_S, StoreOutage, decode_batch
from stream_learner.config import Settings
from stream_learner.errors import InvalidEvent, StoreUnavailable
from stream_learner.events import Event, Partition, Prediction, encode_prediction
from stream_learner.keyed import KeyedEngine, key_of
from stream_learner.observe.board import Board
from stream_learner.state.keyed_base import KeyedStore

log = logging.getLogger("stream_learner.predictor")

REFRESH_S = 0.2  # how often the partitions' versions are asked for


class KeyPredictor:
    def __init__(self, settings: Settings, store: KeyedStore, clients: Clients) -> None:
        self.settings = settings
        self.clients = clients
        self.engine = KeyedEngine(settings.model_spec, settings.task, window=settings.rolling_window,
                                  max_classes=settings.max_classes, max_features=settings.max_features,
                                  learn=False)
        self.keys = FrozenKeys(settings, store, self.engine)
        self.fields = settings.event_fields()
        self.limits = settings.event_limits()
        self.board = Board(settings.model, "frozen", instance=settings.instance_id or socket.gethostname())
        self.events = self.predicted = 0
        self.partitions = 0  # of the events topic: where POST /predict looks a key up
        self.serving: KeyAnswers | None = None  # for POST /predict, once the topic is known
        self.consumer: Consumer | None = None
        self.publisher: Publisher | None = None
        self.letters: DeadLetters | None = None
        self.positions: dict[Partition, int] = {}
        self.closing = False
        self.outage = StoreOutage()
        self.last_commit = self.refreshed = time.monotonic()

    def run(self, stop: threading.Event) -> None:
        s = self.settings
        self.consumer = self.clients.consumer("serve")
        self.partitions = len(self.consumer.end_offsets(s.events_topic, "--events-topic"))
        self.keys.follow(list(range(self.partitions)))  # all: POST /predict answers for any key
        self.serving = KeyAnswers(self)
        topic = s.dead_letters_to("serve")
        limit = self.clients.record_limit(topic) if topic else BROKER_DEFAULT_RECORD_BYTES
        producer = self.clients.producer("stream-learner-serve", limit, failures_only=True)
        self.publisher = Publisher(producer, s)
        self.letters = DeadLetters(self.publisher, topic=topic, max_bytes=limit,
                                   author=Author(s.model, "frozen", s.instance_id or socket.gethostname()))
        self.consumer.subscribe([s.events_topic], on_assign=self.on_assign, on_revoke=self.on_revoke)
        self.board.loaded(0)
        poller = Poller(self.consumer, s.max_poll_records, 0.2, s.busy_poll_ms / 1000)
        try:
            while not stop.is_set():
                records = poller().records
                while not self.handle_batch(records) and not stop.wait(RETRY_S):
                    pass  # the store is out: the same batch again once it answers
                self.publisher.reap()
                self.letters.summarise()
                self.between_batches()
            self.commit()
        finally:
            self.closing = True
            self.consumer.close()
            self.letters.summarise(force=True)
            self.publisher.close()

    def between_batches(self) -> None:
        """New versions, commits and the board's figures: between two batches."""
        assert self.consumer is not None and self.letters is not None
        now = time.monotonic()
        if now - self.refreshed >= REFRESH_S:
            self.refreshed = now
            try:
                self.keys.refresh()
            except StoreUnavailable as exc:
                log.debug("cannot ask the store for new versions now: %s", exc)
        if now - self.last_commit >= self.settings.commit_interval:
            self.commit()
        version = max((v for v, _ in self.keys.parts.values()), default=0)
        self.board.batch(events=self.events, predicted=self.predicted, learned=0,
                         dead_letters=self.letters.counts, version=version)
        if self.board.due():
            cache = self.keys.cache
            self.board.set(reloads=self.keys.reloads, keys={
                "cached": len(cache), "evicted": cache.evicted, "hits": cache.hits, "misses": cache.misses},
                partitions={p: {"version": v} for p, (v, _) in self.keys.parts.items()})
            self.board.refresh(metrics={}, lags=self.consumer.lags())

    def handle_batch(self, records: list[Record]) -> bool:
        """Answer the records from the first not yet answered; False if the store is out."""
        todo = [r for r in records
                if self.positions.get((r.topic() or "", r.partition() or 0), -1) <= (r.offset() or 0)]
        decoded, wanted = decode_batch(todo, self.fields, self.engine.task, self.limits)
        try:
            for partition, keys in wanted.items():
                self.keys.prefetch(partition, keys)
            for record, found in decoded:
                self.handle(record, found)
        except StoreUnavailable as exc:
            self.outage.failed(exc)
            return False
        self.outage.answered()
        return True

    def handle(self, record: Record, found: Event | InvalidEvent) -> None:
        assert self.publisher is not None and self.letters is not None
        source = source_of(record)
        try:
            if isinstance(found, InvalidEvent):
                raise found
            prediction, version = self.predict(found, source.partition)
            try:
                value = encode_prediction(prediction, model=self.settings.model, version=version,
                                          mode="frozen")
            except (TypeError, ValueError) as exc:
                raise InvalidEvent("model_error", f"the prediction cannot be encoded: {exc}") from exc
        except InvalidEvent as exc:
            self.letters.count(exc, source)
            self.letters.send(record.value(), exc, source, self.keys.version(source.partition))
        else:
            self.publisher.prediction(key_of(found), value)
            self.predicted += 1
        self.events += 1
        self.positions[(source.topic, source.partition)] = source.offset + 1

    def predict(self, event: Event, partition: int) -> tuple[Prediction, int]:
        key_model, version = self.keys.model(partition, key_of(event))
        return self.engine.predict(key_model, event), version

    def commit(self) -> None:
        """Flush, then commit what was published: at-least-once predictions."""
        assert self.publisher is not None and self.consumer is not None
        self.publisher.flush()
        assigned = set(self.consumer.assignment())
        self.consumer.commit({k: o for k, o in self.positions.items() if k in assigned}, wait=True)
        self.last_commit = time.monotonic()

    def on_assign(self, partitions: list[Partition]) -> None:
        self.keys.follow([p for _, p in partitions])
        log.info("assigned %s", sorted(partitions))

    def on_revoke(self, partitions: list[Partition]) -> None:
        if partitions and not self.closing:
            self.commit()
        for p in partitions:
            self.positions.pop(p, None)


class KeyAnswers:
    """``POST /predict`` under key scope: each event by its key's model, found in whichever
    partition of the events topic holds it (a key the store has no model of: a fresh one)."""

    def __init__(self, predictor: KeyPredictor) -> None:
        self.predictor = predictor

    @property
    def task(self) -> str:
        return self.predictor.engine.task

    def predict(self, event: Event) -> tuple[Prediction, int]:
        predictor, key = self.predictor, key_of(event)
        store, model = predictor.keys.store, predictor.settings.model
        for p in range(predictor.partitions):
            if predictor.keys.cache.has(p, key) or store.key_models(model, p, [key])[0] is not None:
                return predictor.predict(event, p)
        return predictor.engine.predict(predictor.engine.fresh_model(), event), 0
