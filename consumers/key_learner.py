"""The learner under key scope (``stream-learner learn --model-scope key``): a model per event
key, owned by the partition the key's events are in.

Learners of one model form one consumer group; the group decides who owns which partition,
and with it the models of the partition's keys. There is no writer lease: each partition is
fenced on its own (``consumers.partitions``), so a learner that lost a partition while paused
writes nothing of it when it wakes. Each batch is decoded first, so that the models of its
keys missing from the cache are read from the store in one request per partition.
"""

from __future__ import annotations

import logging
import threading
import time

from consumers.clients.base import Clients, Consumer, Record
from consumers.dead_letters import Author, DeadLetters
from consumers.kafka_io import Poller, Publisher, source_of
from consumers.key_batches import RETRY_S, StoreOutage, decode_batch
from consumers.partitions import Owned, Partitions
from consumers.progress import Progress
from stream_learner.config import Settings
from stream_learner.errors import InvalidEvent, StoreUnavailable
from stream_learner.events import Event, Partition, encode_prediction
from stream_learner.key_cache import KeyCache
from stream_learner.keyed import KeyedEngine, KeyModel, key_of
from stream_learner.metrics import merged
from stream_learner.observe.board import Board
from stream_learner.state.keyed_base import KeyedStore

log = logging.getLogger("stream_learner.learner")


class KeyLearner:
    """Learns the key models of the partitions the consumer group gives it."""

    def __init__(self, settings: Settings, store: KeyedStore, clients: Clients) -> None:
        self.settings = settings
        self.clients = clients
        self.engine = KeyedEngine(settings.model_spec, settings.task, prior=settings.key_prior,
                                  ttl_ms=int(settings.key_ttl * 1000), window=settings.rolling_window,
                                  max_classes=settings.max_classes, max_features=settings.max_features,
                                  watched=frozenset(settings.key_metrics))
        self.cache: KeyCache[KeyModel] = KeyCache(settings.key_cache_size)
        self.partitions = Partitions(settings, store, self.engine, self.cache)
        self.fields = settings.event_fields()
        self.limits = settings.event_limits()
        self.board = Board(settings.model, "learn", instance=settings.instance_id)
        self.events = self.predicted = 0
        self.consumer: Consumer | None = None
        self.publisher: Publisher | None = None
        self.letters: DeadLetters | None = None
        self.closing = False
        self.outage = StoreOutage()
        self.last_commit = time.monotonic()
        self.watched_models: dict[str, KeyModel] = {}  # --key-metric's keys, by their latest models

    def run(self, stop: threading.Event) -> None:
        s = self.settings
        self.consumer = self.clients.consumer("learn")
        limit = self.clients.record_limit(s.dead_letters_to("learn"))
        self.publisher = Publisher(self.clients.producer("stream-learner-learn", limit), s)
        self.letters = DeadLetters(self.publisher, topic=s.dead_letters_to("learn"),
                                   author=Author(s.model, "learn", s.instance_id), max_bytes=limit)
        try:
            self.consumer.subscribe([s.events_topic], on_assign=self.on_assign, on_revoke=self.on_revoke)
            self.board.loaded(0)
            self.loop(stop)
            self.save_all("shutdown")
            self.commit(wait=True)
        finally:
            self.closing = True
            self.consumer.close()
            self.letters.summarise(force=True)
            self.publisher.close()

    def loop(self, stop: threading.Event) -> None:
        assert self.consumer is not None and self.letters is not None and self.publisher is not None
        s = self.settings
        poller = Poller(self.consumer, s.max_poll_records, 0.1, s.busy_poll_ms / 1000)
        progress = Progress(s.progress_interval)
        while not stop.is_set():
            records = poller().records
            while not self.handle_batch(records) and not stop.wait(RETRY_S):
                pass  # the store is out: the rest of the batch once it answers
            self.publisher.reap()
            self.letters.summarise()
            now = time.monotonic()
            full = self.cache.dirty_count() >= self.cache.size  # dirty keys stay: bound them
            for owned in list(self.partitions.owned.values()):
                if (full and owned.since) or self.partitions.due(owned, now):
                    self.save(owned, "full cache" if full else "interval")
            if now - self.last_commit >= s.commit_interval:
                self.commit(wait=False)
            self.watch()
            if progress.due():
                snap = self.board.snapshot()
                progress.report(snap, learned=snap.learned_total)

    def watch(self) -> None:
        assert self.consumer is not None and self.letters is not None
        owned = self.partitions.owned.values()
        self.board.batch(events=self.events, predicted=self.predicted,
                         learned=self.engine.learned, dead_letters=self.letters.counts,
                         version=max((o.version for o in owned), default=0))
        if self.board.due():
            states = [o.state for o in owned]
            self.board.refresh(metrics=merged([state.metrics for state in states]), lags=self.consumer.lags())
            cache = self.cache
            self.board.set(keys={
                "cached": len(cache), "dirty": cache.dirty_count(), "evicted": cache.evicted,
                "hits": cache.hits, "misses": cache.misses,
                "created": self.engine.keys_created, "expired": self.engine.keys_expired},
                partitions={o.partition: {"version": o.version, "metrics": o.state.metrics.report(),
                                          "checkpoint_bytes": o.last_bytes, "checkpoint_at": o.last_at}
                            for o in owned}, learned_total=sum(state.learned for state in states),
                key_metrics={k: m.metrics.report() for k, m in self.watched_models.items() if m.metrics})

    def handle_batch(self, records: list[Record]) -> bool:
        """Decode the batch, read its keys' models missing from the cache, then each record not
        handled yet; False when the store is out (the rest waits for it)."""
        todo = []
        for record in records:
            owned = self.partitions.owned.get(record.partition() or 0)
            if owned is not None and (owned.offset is None or (record.offset() or 0) >= owned.offset):
                todo.append(record)  # not fenced (another's now), nor handled before the store went out
        decoded, wanted = decode_batch(todo, self.fields, self.engine.task, self.limits)
        self.partitions.absent.clear()
        try:
            for partition, keys in wanted.items():
                self.partitions.load(partition, keys)
            for record, found in decoded:
                owned = self.partitions.owned.get(record.partition() or 0)
                if owned is not None:
                    self.handle(owned, record, found)
        except StoreUnavailable as exc:
            self.outage.failed(exc)
            return False
        self.outage.answered()
        return True

    def handle(self, owned: Owned, record: Record, found: Event | InvalidEvent) -> None:
        """One record: its prediction or its dead letter, then the partition's offset past it."""
        assert self.publisher is not None and self.letters is not None
        try:
            if isinstance(found, InvalidEvent):
                raise found
            self.step(owned, found)
        except InvalidEvent as exc:
            source = source_of(record)
            self.letters.count(exc, source)
            owned.dead_letters[exc.reason] = owned.dead_letters.get(exc.reason, 0) + 1
            self.letters.send(record.value(), exc, source, owned.version)
            owned.state.events += 1
        owned.offset = (record.offset() or 0) + 1
        owned.since += 1
        self.events += 1

    def step(self, owned: Owned, event: Event) -> None:
        assert self.publisher is not None
        key = key_of(event)
        p, engine = owned.partition, self.engine
        key_model = engine.model_for(owned.state, self.partitions.model(p, key), event)
        prediction = engine.predict(key_model, event)
        try:
            value = encode_prediction(prediction, model=self.settings.model, version=owned.version,
                                      mode="learn")
        except (TypeError, ValueError) as exc:
            raise InvalidEvent("model_error", f"the prediction cannot be encoded: {exc}") from exc
        engine.learn(owned.state, key_model, prediction)
        self.cache.put(p, key, key_model, changed=True)
        if key_model.metrics is not None:
            self.watched_models[key] = key_model
        self.publisher.prediction(key, value)
        self.predicted += 1

    def save(self, owned: Owned, reason: str) -> None:
        """Checkpoint one partition; the board hears of the loop's pause."""
        assert self.publisher is not None
        started = time.perf_counter()
        nbytes = self.partitions.save(owned, self.publisher, reason)
        if nbytes is not None:
            paused = time.perf_counter() - started
            self.board.checkpointed(version=owned.version, nbytes=nbytes, pause_s=paused)

    def save_all(self, reason: str) -> None:
        for owned in list(self.partitions.owned.values()):
            if owned.since:
                self.save(owned, reason)

    def commit(self, wait: bool) -> None:
        """Tell Kafka the checkpointed offsets (for lag monitoring; the checkpoints say where
        learning goes on)."""
        assert self.consumer is not None
        covered, self.partitions.uncommitted = self.partitions.uncommitted, {}
        mine = {(self.settings.events_topic, p): o for p, o in covered.items()}
        if mine:
            self.consumer.commit(mine, wait=wait)
        self.last_commit = time.monotonic()

    def on_assign(self, partitions: list[Partition]) -> dict[Partition, int]:
        """Claim each assigned partition and start it at its checkpoint's offset."""
        starts: dict[Partition, int] = {}
        for tp in partitions:
            owned = self.partitions.take(tp[1])
            if owned.offset is not None:
                starts[tp] = owned.offset
        log.info("assigned %s", sorted(partitions))
        return starts

    def on_revoke(self, partitions: list[Partition]) -> None:
        """Checkpoint each partition before it goes; then forget its keys."""
        if self.closing or self.publisher is None:
            return
        for tp in partitions:
            owned = self.partitions.owned.get(tp[1])
            if owned is not None and owned.since:
                self.save(owned, "revocation")
            self.partitions.release(tp[1])
        self.commit(wait=False)
