"""The frozen predictor (``stream-learner serve``): inference only, hot reload between batches.

It never learns and never writes the store. Several predictors in one consumer group
share the partitions; offsets are committed to Kafka after the producer is flushed, so
every event is predicted at least once. A newer checkpoint is loaded between two poll
batches: the consumer's position does not move, so no event is lost or predicted twice
across the swap.
"""

from __future__ import annotations

import logging
import socket
import threading
import time

from consumers.clients.base import BROKER_DEFAULT_RECORD_BYTES, Clients, Consumer, Record
from consumers.dead_letters import Author, DeadLetters
from consumers.kafka_io import Poller, Publisher, source_of
from consumers.reloader import Reloader
from consumers.step import RecordStep
from stream_learner.checkpoint import Checkpoint, open_record
from stream_learner.config import Settings
from stream_learner.engine import Engine
from stream_learner.errors import InvalidEvent, NoCheckpoint, StoreUnavailable
from stream_learner.events import Partition
from stream_learner.observe.board import Board
from stream_learner.observe.predict import FrozenModel
from stream_learner.state.base import ModelStore

log = logging.getLogger("stream_learner.predictor")


class Predictor:
    def __init__(self, settings: Settings, store: ModelStore, clients: Clients) -> None:
        self.settings = settings
        self.store = store
        self.clients = clients
        self.keys = settings.signing_keys()
        self.step = RecordStep(settings, "frozen")
        self.engine: Engine | None = None
        self.version = 0  # the model version served
        # The two together, for HTTP predictions: swapped whole, never seen half-loaded.
        self.serving: FrozenModel | None = None
        self.board = Board(settings.model, "frozen", instance=settings.instance_id or socket.gethostname())
        self.events = self.predicted = self.reloads = 0
        self.consumer: Consumer | None = None
        self.publisher: Publisher | None = None
        self.letters: DeadLetters | None = None
        self.positions: dict[Partition, int] = {}  # the next offset of each partition
        # What the consumer owns, as its rebalance callbacks said: readable from any thread (a
        # consumer's own methods may not be, while another thread polls it).
        self.assigned: frozenset[tuple[str, int]] = frozenset()
        self.closing = False  # the consumer's close revokes its partitions: committed already
        self.last_commit = time.monotonic()

    def load(self, version: int, stop: threading.Event) -> None:
        """Load ``version`` (0: the served one), waiting up to ``wait_for_model`` seconds for one
        to exist."""
        deadline = time.monotonic() + self.settings.wait_for_model
        announced = False
        while True:
            self.board.beat()  # waiting for a model is not being stuck
            try:
                target = version or self.store.served(self.settings.model).version
                ckpt = open_record(self.store.load(self.settings.model, target), self.keys,
                                   self.settings.allow_version_mismatch, self.settings.trusted_packages())
                break
            except (NoCheckpoint, StoreUnavailable) as exc:
                if time.monotonic() >= deadline or stop.is_set():
                    raise
                if not announced:
                    log.info("waiting up to %.0f s for a checkpoint: %s", self.settings.wait_for_model,
                             exc)
                    announced = True
                stop.wait(0.5)
        self.swap(ckpt)

    def swap(self, ckpt: Checkpoint) -> None:
        self.engine = Engine(ckpt.state, learn=False)
        self.version = ckpt.meta.version
        self.serving = FrozenModel(self.engine, self.version)
        self.board.loaded(self.version)
        log.info("serving model %s v%d (%d learned)", ckpt.meta.model, ckpt.meta.version,
                 ckpt.state.learned)

    def run(self, stop: threading.Event) -> None:
        self.load(self.settings.pin_version, stop)
        reloader = None if self.settings.pin_version else Reloader(self.store, self.settings, self.version)
        if reloader is not None:
            reloader.start()
        try:
            self.serve(stop, reloader)
        finally:
            if reloader is not None:
                reloader.stop()

    def serve(self, stop: threading.Event, reloader: Reloader | None) -> None:
        s = self.settings
        self.consumer = self.clients.consumer("serve")
        topic = s.dead_letters_to("serve")
        limit = self.clients.record_limit(topic) if topic else BROKER_DEFAULT_RECORD_BYTES
        producer = self.clients.producer("stream-learner-serve", limit, failures_only=True)
        self.publisher = Publisher(producer, s)
        author = Author(s.model, "frozen", s.instance_id or socket.gethostname())
        self.letters = DeadLetters(self.publisher, topic=topic, author=author,
                                   max_bytes=limit)
        self.consumer.subscribe([self.settings.events_topic], on_assign=self.on_assign,
                                 on_revoke=self.on_revoke)
        poller = Poller(self.consumer, self.settings.max_poll_records, 0.2,
                        self.settings.busy_poll_ms / 1000)
        try:
            while not stop.is_set():
                for record in poller().records:
                    self.handle(record)
                self.publisher.reap()  # drop the acknowledged sends as they come
                self.letters.summarise()
                if time.monotonic() - self.last_commit >= self.settings.commit_interval:
                    self.commit()
                if reloader is not None and (ckpt := reloader.take()) is not None:
                    self.swap(ckpt)  # between batches: the consumer's position does not move
                    self.reloads += 1
                self.watch()
            self.commit()
        finally:
            self.closing = True
            self.consumer.close()
            self.letters.summarise(force=True)
            self.publisher.close()

    def watch(self) -> None:
        """The board's figures after a batch (the lags every second)."""
        assert self.letters is not None and self.consumer is not None
        board = self.board
        board.batch(events=self.events, predicted=self.predicted, learned=0,
                    dead_letters=self.letters.counts, version=self.version)
        if board.due():
            board.set(reloads=self.reloads)
            board.refresh(metrics={}, lags=self.consumer.lags())

    def handle(self, record: Record) -> None:
        """One record through the step; publish its prediction or its dead letter."""
        assert self.engine is not None and self.publisher is not None and self.letters is not None
        source = source_of(record)
        raw = record.value()
        try:
            answer = self.step(self.engine, raw, source, self.version)
        except InvalidEvent as exc:
            self.letters.count(exc, source)
            self.letters.send(raw, exc, source, self.version)
        else:
            assert answer is not None  # a predictor reads no labels
            self.publisher.prediction(answer[0], answer[1])
            self.predicted += 1
        self.events += 1
        self.positions[(source.topic, source.partition)] = source.offset + 1

    def commit(self, wait: bool = True) -> None:
        """Flush, then commit what was published: at-least-once predictions (``wait``: for the
        coordinator's answer)."""
        assert self.publisher is not None and self.consumer is not None
        self.publisher.flush()
        assigned = set(self.consumer.assignment())
        self.consumer.commit({k: o for k, o in self.positions.items() if k in assigned}, wait=wait)
        self.last_commit = time.monotonic()

    def on_assign(self, partitions: list[Partition]) -> None:
        """The partitions start where the group committed them."""
        self.assigned = frozenset(partitions)
        log.info("assigned %s", sorted(self.assigned))

    def on_revoke(self, partitions: list[Partition]) -> None:
        """Commit what was published before the partitions go to another predictor."""
        if partitions and not self.closing:
            self.commit()
        for p in partitions:
            self.positions.pop(p, None)
        self.assigned = frozenset()
