"""The continually-learning consumer (``stream-learner learn``).

Checkpoint protocol (docs/operations.md): every send before the snapshot acknowledged ->
write the signed checkpoint with the next offset of every partition, atomically and
fenced -> commit those offsets to Kafka (for lag monitoring only). On start and on every
assignment the consumer seeks to the checkpoint's offsets, so each labelled event is
learned exactly once across crashes, and predictions are published at least once.

Checkpoints during the run are written off the loop (consumers/background_checkpoint.py): the
loop stops for the snapshot, not for the flush or the write. A model that pickles within
``--checkpoint-inline-bytes`` is pickled in the loop; a larger one by a forked child, whose
pause is the fork's (straight away once a checkpoint has shown the model to be larger). The
first, the last and those at a rebalance are written in the loop, since nothing may happen
meanwhile.

Only the holder of the model's writer lease learns; another learner started for the same
model waits as a standby and takes over when the lease expires or is released.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import threading
import time
from dataclasses import dataclass

import confluent_kafka as rdkafka

from consumers import crashpoints
from consumers.background_checkpoint import (
    BackgroundCheckpoint,
    ForkedCheckpoint,
    Outcome,
    PickledCheckpoint,
)
from consumers.dead_letters import Author, DeadLetters
from consumers.instance import InstanceSlot
from consumers.kafka_io import (
    Poller,
    Publisher,
    commit,
    make_consumer,
    make_producer,
    make_reader,
    record_limit,
    source_of,
)
from consumers.lease import WriterLease
from consumers.ordering import EventTimeMerge
from consumers.progress import Progress, lag
from consumers.replay import ReplayGuard, positions, recover
from consumers.rewind import Handled, RewindPoint
from stream_learner.checkpoint import (
    CheckpointMeta,
    open_record,
    seal_record,
    tp_key,
    verify_record,
)
from stream_learner.config import Settings
from stream_learner.engine import Engine, ModelState
from stream_learner.errors import (
    ConfigError,
    InvalidEvent,
    ModelBroken,
    NoCheckpoint,
    OutOfOrder,
    StoreUnavailable,
)
from stream_learner.events import Source, check_label, decode_event, decode_label
from stream_learner.models import same_spec
from stream_learner.pending import PendingLabels
from stream_learner.state.base import ModelStore

log = logging.getLogger("stream_learner.learner")

RETRY_MIN, RETRY_MAX = 0.5, 30.0  # seconds between checkpoint attempts while Redis is down
# Rejections after which the model may be half-updated: back to the last checkpoint.
REWINDS = ("model_error", "internal_error")
BUDGET_REPORT_S = 30.0


def configure_labels(state: ModelState, settings: Settings) -> None:
    """Keep pending events when a labels topic is configured (with the current bounds)."""
    if not settings.labels_topic:
        state.pending = None  # no late labels: nothing waits
        return
    if state.pending is None:
        state.pending = PendingLabels(settings.label_ttl, settings.max_pending)
    state.pending.ttl, state.pending.max_pending = settings.label_ttl, settings.max_pending
    state.pending.max_bytes = settings.max_pending_bytes
    state.default_label = None
    if settings.default_label:
        try:
            state.default_label = check_label(json.loads(settings.default_label), state.task)
        except (ValueError, InvalidEvent) as exc:
            raise ConfigError(f"--default-label: not a {state.task} label: {exc}") from None


@dataclass(frozen=True)
class _Plan:
    """A checkpoint decided at one instant of the loop: what its header says of the stream."""

    version: int
    offsets: dict[str, int]
    events: int
    dead_letters: dict[str, int]
    since: int  # events since the previous checkpoint
    seq: int  # records handled before it (Handled.seq)
    sends: int  # the sends made before it, which must all be acknowledged first
    still_ahead: bool  # predictions or dead letters beyond its offsets are sent already


@dataclass
class _InFlight:
    """A checkpoint being written by a forked child."""

    writer: BackgroundCheckpoint
    plan: _Plan
    reason: str
    blocked: float  # seconds of the running loop spent on it so far
    # Seconds spent waiting for it to finish when the loop could not go on without it: at
    # shutdown, before a rewind or an inline checkpoint.
    waited: float = 0.0


class _Rewind(Exception):
    """A model raised mid-update: go back to the last snapshot and replay without the event."""


class Learner:
    """One learner per model: it alone writes the model's checkpoints."""

    def __init__(self, settings: Settings, store: ModelStore) -> None:
        self.settings = settings
        self.store = store
        self.owner = settings.instance_id  # the instance id, once its slot is taken (InstanceSlot)
        self.fields = settings.event_fields()
        self.limits = settings.event_limits()
        self.offsets: dict[str, int] = {}  # tp_key -> next offset, consistent with self.state
        self.first_seen: dict[str, int] = {}  # partitions the snapshot does not cover yet
        self.events = 0
        self.dead_letters: dict[str, int] = {}  # carried across restarts by the checkpoint
        # Predictions and dead-letter topics' tp_key -> next offset, as of the checkpoint.
        self.published: dict[str, int] = {}
        self.guard = ReplayGuard()
        self.poisoned: dict[tuple[str, int, int], InvalidEvent] = {}  # records the model raised on
        self.model_errors = 0  # consecutive events dead-lettered as model errors
        self.first_model_error: InvalidEvent | None = None
        self.point = RewindPoint()  # where a rewind goes: the last checkpoint, or a snapshot
        self.handled = Handled()  # the records since that point, replayed by a rewind
        self.snapshot_now = False  # after a model error's dead letter: so no replay repeats it
        self.refused_reported = 0  # features dropped by the budget, as last logged
        self.budget_reported_at = -BUDGET_REPORT_S
        self.merge: EventTimeMerge | None = None
        self.since_checkpoint = 0
        self.last_checkpoint = time.monotonic()
        self.last_commit = 0.0
        self.uncommitted: dict[str, int] | None = None  # the last checkpoint's offsets, till Kafka hears
        self.failures = 0
        self.retry_at = 0.0
        self.version = 0
        self.token = 0
        self.background: _InFlight | None = None
        self.last_bytes: int | None = None  # the last background checkpoint's size, once known
        self.closing = False  # the consumer's close revokes its partitions: no checkpoint then
        self.state: ModelState | None = None
        self.engine: Engine | None = None
        self.consumer: rdkafka.Consumer | None = None
        self.publisher: Publisher | None = None
        self.letters: DeadLetters | None = None
        self.lease: WriterLease | None = None

    # -- state ------------------------------------------------------------------------------

    def restore(self, point: RewindPoint | None = None) -> None:
        """Load the latest checkpoint, or build a fresh model when there is none (at start), or
        go back to a rewind point (after a model error)."""
        s = self.settings
        if point is not None and point.payload is not None and point.meta is not None:
            meta = point.meta
            state = pickle.loads(point.payload)  # pickled by this very process: never from outside
        else:
            state, meta = self.load_latest(logged=point is None)
        self.state, self.version = state, meta.version
        self.offsets, self.events = dict(meta.offsets), meta.events
        self.dead_letters.clear()  # self.letters counts into this very dict
        self.dead_letters.update(meta.dead_letters)
        self.published = dict(meta.published)
        self.failures = max(self.failures, meta.checkpoint_failures)  # a rewind keeps its own count
        configure_labels(state, s)
        state.features.max_features = s.max_features
        self.engine = Engine(state, model_name=s.model, mode="learn", version=self.version,
                             max_classes=s.max_classes)

    def load_latest(self, logged: bool = True) -> tuple[ModelState, CheckpointMeta]:
        """The store's latest checkpoint, or a fresh model; ``logged``: say which (at start, not
        at each rewind)."""
        s = self.settings
        level = logging.INFO if logged else logging.DEBUG
        try:
            ckpt = open_record(self.store.load(s.model), s.signing_keys(), s.allow_version_mismatch,
                               s.trusted_packages())
        except NoCheckpoint:
            log.log(level, "model %s: no checkpoint, starting fresh from %s", s.model, s.start_from)
            return ModelState.fresh(s.model_spec, s.task, s.rolling_window), CheckpointMeta(s.model, 0, {})
        if not same_spec(ckpt.state.spec, s.model_spec):
            raise ConfigError(
                f"--model-spec: model {s.model} was trained with {ckpt.state.spec!r}, not "
                f"{s.model_spec!r}. Start the new spec under a new --model name, or delete the "
                f"model's checkpoints: stream-learner models reset --model {s.model} --yes")
        log.log(level, "model %s: resumed v%d (%d learned) at %s", s.model, ckpt.meta.version,
                ckpt.state.learned, ckpt.meta.offsets)
        return ckpt.state, ckpt.meta

    @property
    def output_topics(self) -> dict[str, str]:
        """The topics the learner writes to, with their flags."""
        s = self.settings
        return {s.predictions_topic: "--predictions-topic", s.dead_letters_to("learn"): "--dead-letter-topic"}

    def output_positions(self) -> dict[str, int]:
        """Where each partition of the predictions and dead-letter topics ends now."""
        reader = make_reader(self.settings)
        try:
            return positions(reader, self.output_topics)
        finally:
            reader.close()

    def recover_sent(self) -> None:
        """Find the predictions and dead letters an earlier run sent after the checkpoint, so
        that a replay does not send them twice."""
        reader = make_reader(self.settings)
        try:
            self.guard.recovered = recover(reader, topics=self.output_topics, start=self.published,
                                           model=self.settings.model, offsets=self.offsets)
        finally:
            reader.close()
        if self.guard.recovered:
            log.info("%d predictions and dead letters after v%d are sent already; a replay skips them",
                     len(self.guard.recovered), self.version)

    # -- the loop ---------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        with InstanceSlot(self.settings) as slot:
            self.owner = slot.id
            self.run_as_writer(stop)

    def run_as_writer(self, stop: threading.Event) -> None:
        s = self.settings
        with WriterLease(self.store, s.model, ttl=s.lease_ttl, owner=self.owner) as lease:
            if not lease.wait_for(stop):
                return
            self.lease, self.token = lease, lease.token
            self.restore()
            self.consumer = make_consumer(s, "learn")
            limit = record_limit(s, s.dead_letters_to("learn"))
            self.publisher = Publisher(make_producer(s, "stream-learner-learn", limit), s)
            author = Author(s.model, "learn", self.owner)
            self.letters = DeadLetters(self.publisher, topic=s.dead_letters_to("learn"), author=author,
                                       max_bytes=limit, counts=self.dead_letters)
            try:
                if self.version == 0:
                    # v1 records where the output topics end, so that a crash before v2 can
                    # still find (and not repeat) the predictions and dead letters sent since.
                    self.published = self.output_positions()
                    self.checkpoint("initial", force=True)
                else:
                    self.recover_sent()
                self.merge = EventTimeMerge()
                topics = [s.events_topic, *([s.labels_topic] if self.labels else [])]
                self.consumer.subscribe(topics, on_assign=self.on_assign, on_revoke=self.on_revoke)
                self.loop(stop)
            finally:
                if self.background is not None:  # the loop failed: its child must not write
                    self.background.writer.abort()
                self.closing = True
                self.consumer.close()
                self.letters.summarise(force=True)
                self.publisher.close()

    @property
    def labels(self) -> bool:
        return bool(self.settings.labels_topic)

    def loop(self, stop: threading.Event) -> None:
        assert self.consumer is not None and self.merge is not None and self.letters is not None
        poller = Poller(self.consumer, self.settings.max_poll_records, 0.1,
                        self.settings.busy_poll_ms / 1000)
        assert self.lease is not None
        resume = False
        progress = Progress(self.settings.progress_interval)
        while not stop.is_set():
            self.lease.check()
            # Rebalance callbacks (on_assign, on_revoke) run in here, and their errors come out.
            # After a rewind or a snapshot, records are buffered already: no waiting for more.
            self.merge.add(poller(wait=not resume))
            resume = False
            try:
                for record in self.merge.drain():
                    self.handle(record)
                    if self.snapshot_now:
                        resume = True
                        break
            except _Rewind:
                self.rewind()
                resume = True
                continue
            if self.snapshot_now:
                self.snapshot_now = False
                self.keep_rewind_point()
                self.check_model()
            self.advance_checkpoint()
            self.letters.summarise()
            if progress.due():
                self.report(progress)
            if time.monotonic() - self.last_commit >= self.settings.commit_interval:
                self.commit_offsets(wait=False)
            if self.checkpoint_due():
                if self.writes_off_loop:
                    self.start_checkpoint("interval")
                else:
                    self.checkpoint("interval")
        self.checkpoint("shutdown")
        self.commit_offsets(wait=True)

    def handle(self, record: rdkafka.Message) -> None:
        assert self.publisher is not None and self.letters is not None
        source = source_of(record)
        topic, offset = source.topic, source.offset
        where = (topic, source.partition, offset)
        tpk = tp_key(topic, source.partition)
        if tpk not in self.offsets and tpk not in self.first_seen:
            self.first_seen[tpk] = offset
        raw = record.value()
        self.handled.add(record)
        poison = self.poisoned.get(where) if self.poisoned else None
        try:
            if poison is not None:
                raise poison
            prediction, key = self.process(raw, source)
        except InvalidEvent as exc:
            if exc.reason in REWINDS and poison is None:
                self.poisoned[where] = exc
                # Logged as its dead letter is, once per reason and then summed up.
                log.debug("model error at %s, rewinding: %s", source, exc)
                raise _Rewind from exc
            if poison is not None:
                self.model_failed(poison)
            self.letters.count(exc, source)
            if not self.guard.sent(tpk, where):
                self.letters.send(raw, exc, source, self.version)
                self.guard.answer(tpk, offset)
        else:
            self.model_errors = 0
            if crashpoints.ARMED:
                crashpoints.hit("after_predict")
            if prediction is not None and not self.guard.sent(tpk, where):
                self.publisher.prediction(key, prediction)
                self.guard.answer(tpk, offset)
                if crashpoints.ARMED:
                    crashpoints.hit("after_publish")
        self.offsets[tpk] = offset + 1
        self.events += 1
        self.since_checkpoint += 1

    def process(self, raw: bytes | None, source: Source) -> tuple[bytes | None, str]:
        """Decode one record and run it through the engine: the encoded prediction and its
        Kafka key (None for a label). Whatever else goes wrong is an ``internal_error``, which
        rewinds like a model error: the record is dead-lettered, never the process stopped."""
        assert self.engine is not None
        try:
            if self.labels and source.topic == self.settings.labels_topic:
                self.engine.label(decode_label(raw, source, self.fields, self.engine.state.task,
                                               self.limits))
                return None, ""
            event = decode_event(raw, source, self.fields, self.engine.state.task, self.limits)
            return self.engine.process(event), event.key or event.id
        except InvalidEvent:
            raise
        except Exception as exc:
            raise InvalidEvent("internal_error", f"{type(exc).__name__}: {exc}") from exc

    def model_failed(self, error: InvalidEvent) -> None:
        """A model error is dead-lettered: a rewind point follows at once, so that no later
        rewind replays it."""
        self.snapshot_now = True
        self.model_errors += 1
        if self.model_errors == 1:
            self.first_model_error = error

    def check_model(self) -> None:
        """A model that has never learned an event and raised on ``--max-model-errors`` in a row
        has a broken spec: checkpoint (a restart goes on past these events), then stop. A model
        that has learned is not stopped by any events: they are the events' fault."""
        assert self.state is not None
        if self.model_errors < self.settings.max_model_errors or self.state.learned:
            return
        self.checkpoint("stopping: the model cannot learn", force=True)
        raise ModelBroken(
            f"--model-spec {self.settings.model_spec!r}: the model raised on {self.model_errors} "
            f"events in a row and has learned none (--max-model-errors); the first: "
            f"{self.first_model_error}")

    def keep_rewind_point(self) -> None:
        """A snapshot in memory of the state as it is now, as the point the next rewind goes to."""
        assert self.state is not None
        meta = CheckpointMeta(self.settings.model, self.version, dict(self.offsets), events=self.events,
                              dead_letters=dict(self.dead_letters), published=dict(self.published),
                              checkpoint_failures=self.failures, token=self.token)
        payload = pickle.dumps(self.state, protocol=pickle.HIGHEST_PROTOCOL)
        self.point = RewindPoint(payload, meta, self.handled.seq, self.since_checkpoint)
        self.handled.drop_before(self.point.seq)
        self.poisoned = {(t, p, o): e for (t, p, o), e in self.poisoned.items()
                         if o >= self.offsets.get(tp_key(t, p), 0)}

    def rewind(self) -> None:
        """Back to the rewind point; the poisoned event is dead-lettered when it comes round
        again. What was handled since is replayed from memory, or read again from Kafka."""
        assert self.consumer is not None and self.merge is not None
        self.finish_checkpoint()
        point = self.point
        replay = self.handled.since(point.seq)
        self.restore(point)
        self.since_checkpoint = point.since
        self.handled.restart_at(point.seq)
        if replay is not None and self.follows_on([*replay, *self.merge.heads()]):
            self.merge.push_front(replay)
            return
        self.merge.clear()
        for tp in self.consumer.assignment():
            key = tp_key(tp.topic, tp.partition)
            offset = self.offsets.get(key, self.first_seen.get(key))
            if offset is not None:
                self.consumer.seek(rdkafka.TopicPartition(tp.topic, tp.partition, offset))

    def follows_on(self, records: list[rdkafka.Message]) -> bool:
        """Whether ``records`` go on, in each partition, exactly where the state's offsets end."""
        expected: dict[str, int | None] = {}
        for record in records:
            key = tp_key(record.topic() or "", record.partition() or 0)
            if key not in expected:
                expected[key] = self.offsets.get(key, self.first_seen.get(key))
            if record.offset() != expected[key]:
                return False
            expected[key] = (record.offset() or 0) + 1
        return True

    @property
    def writes_off_loop(self) -> bool:
        """Whether checkpoints during the run are written off the loop. Some are written by a
        forked child, which needs a store that other processes can reach."""
        return self.store.shared and hasattr(os, "fork")

    def checkpoint_due(self) -> bool:
        s, now = self.settings, time.monotonic()
        if self.since_checkpoint == 0 or now < self.retry_at or self.background is not None:
            return False
        return (self.since_checkpoint >= s.checkpoint_every
                or now - self.last_checkpoint >= s.checkpoint_interval)

    def plan(self) -> _Plan:
        """The next checkpoint, as of now."""
        assert self.publisher is not None
        # Predictions and dead letters of records beyond this checkpoint's offsets that an earlier
        # run sent (a restart interleaves partitions differently) must stay findable: until there
        # are none, the scan positions for the next restart do not move.
        still_ahead = self.guard.ahead_of(self.offsets)
        return _Plan(self.version + 1, dict(self.offsets), self.events, dict(self.dead_letters),
                     self.since_checkpoint, self.handled.seq, self.publisher.sent, still_ahead)

    def meta(self, plan: _Plan) -> CheckpointMeta:
        return CheckpointMeta(self.settings.model, plan.version, plan.offsets, events=plan.events,
                              dead_letters=plan.dead_letters, checkpoint_failures=self.failures,
                              token=self.token)

    def published_as_of(self, plan: _Plan) -> dict[str, int]:
        """The predictions topic's positions for the header, once the plan's sends are reaped."""
        assert self.publisher is not None
        published = dict(self.published)
        if not plan.still_ahead:
            published.update(self.publisher.published)
        return published

    def checkpoint(self, reason: str, force: bool = False) -> None:
        """In the loop: flush -> save (fenced, atomic); ``commit_offsets`` tells Kafka later. A
        store outage is retried with backoff; a checkpoint in the background is finished first."""
        assert self.state is not None and self.publisher is not None
        self.finish_checkpoint()
        if self.since_checkpoint == 0 and not force:
            return
        started = time.perf_counter()
        plan = self.plan()
        self.publisher.flush(plan.sends)
        if crashpoints.ARMED:
            crashpoints.hit("after_flush")
        meta = self.meta(plan)
        meta.published = self.published_as_of(plan)
        record = seal_record(self.state, meta, self.settings.hmac_key_id, self.settings.hmac_key.encode())
        if crashpoints.ARMED:
            crashpoints.hit("during_checkpoint")
        try:
            self.store.save(self.settings.model, plan.version, record, self.token,
                            self.settings.keep_versions)
        except StoreUnavailable as exc:
            self.failed(plan, exc)
            return
        except OutOfOrder as exc:
            self.resolve(plan, exc)
            return
        self.completed(plan, reason, meta.published, Outcome(len(record.payload), meta.metrics),
                       time.perf_counter() - started, payload=record.payload)

    def start_checkpoint(self, reason: str) -> None:
        """Fork the writer of the next checkpoint and go on; ``advance_checkpoint`` finishes it."""
        assert self.state is not None
        started = time.perf_counter()
        plan = self.plan()
        s = self.settings
        meta = self.meta(plan)
        args = (self.store, s.hmac_key_id, s.hmac_key.encode(), s.keep_versions)
        writer: BackgroundCheckpoint | None = None
        # A small model pickles in ~1 - 2 ms: in the loop, that is a shorter pause than a fork()
        # (~5 ms), and it spares the loop the copying of each heap page it writes to after one.
        # Finding out that a model is larger costs the pickling of the limit (~1 ms into a forest).
        limit = s.checkpoint_inline_bytes
        if limit and (self.last_bytes is None or self.last_bytes <= limit):
            writer = PickledCheckpoint.start(self.state, meta, *args, limit=limit)
        if writer is None:
            writer = ForkedCheckpoint.start(self.state, meta, *args)
        self.background = _InFlight(writer, plan, reason, time.perf_counter() - started)

    def advance_checkpoint(self, block: bool = False) -> None:
        """Reap acknowledged sends; release the writer once its sends are all acknowledged,
        and take its outcome when it has one (``block``: wait for both)."""
        assert self.publisher is not None
        flight = self.background
        if flight is None:
            self.publisher.reap()  # keeps the queue of sends short between checkpoints
            return
        writer, plan = flight.writer, flight.plan
        # Reaping acknowledgements is the loop's work with or without a checkpoint: the pause
        # counted is the hand-off to the writer and the taking of its outcome.
        if not writer.released and not block and self.publisher.reap(plan.sends):
            return
        started = time.perf_counter()
        try:
            outcome = None
            if not writer.released:
                if block:
                    self.publisher.flush(plan.sends)
                self.publisher.check()
                if crashpoints.ARMED:
                    crashpoints.hit("after_flush")
                writer.release(self.published_as_of(plan))  # its courier passes during_checkpoint
            outcome = writer.wait() if block else writer.poll()
        except BaseException:
            self.background = None
            writer.abort()
            raise
        finally:
            if block:
                flight.waited += time.perf_counter() - started
            else:
                flight.blocked += time.perf_counter() - started
        if outcome is None:
            return
        self.background = None
        if isinstance(outcome.error, StoreUnavailable):
            self.failed(plan, outcome.error)
        elif isinstance(outcome.error, OutOfOrder):
            self.resolve(plan, outcome.error)
        elif outcome.error is not None:
            raise outcome.error
        else:
            self.last_bytes = outcome.payload_bytes
            self.completed(plan, flight.reason, self.published_as_of(plan), outcome, flight.blocked,
                           flight.waited, writer, writer.payload)

    def finish_checkpoint(self) -> None:
        """Wait for the checkpoint in the background, if there is one."""
        self.advance_checkpoint(block=True)

    def resolve(self, plan: _Plan, exc: OutOfOrder) -> None:
        """A save whose answer was lost (a timeout) may have landed all the same: then the
        store's latest version is that save, signed with this learner's key and token, and the
        learner goes on from it (its next checkpoint follows it at once); else ``exc``."""
        assert self.engine is not None
        s = self.settings
        try:
            latest = self.store.latest_version(s.model)
            meta = verify_record(self.store.load(s.model, latest), s.signing_keys(),
                                 s.allow_version_mismatch)
        except StoreUnavailable as unavailable:
            self.failed(plan, unavailable)
            return
        if latest < plan.version or meta.token != self.token:
            raise exc
        log.warning("checkpoint v%d was saved although its answer was lost; the next one follows it",
                    latest)
        self.version = self.engine.version = latest
        self.retry_at = 0.0

    def failed(self, plan: _Plan, exc: StoreUnavailable) -> None:
        self.failures += 1
        delay = min(RETRY_MAX, RETRY_MIN * 2 ** min(self.failures - 1, 10))
        self.retry_at = time.monotonic() + delay
        log.error("checkpoint v%d failed (%d failures so far), retrying in %.1f s: %s",
                  plan.version, self.failures, delay, exc)

    def completed(self, plan: _Plan, reason: str, published: dict[str, int], outcome: Outcome,
                  blocked: float, waited: float = 0.0, writer: BackgroundCheckpoint | None = None,
                  payload: bytes | None = None) -> None:
        """The plan is saved: it is the new rewind point (unless a later one was kept since),
        and Kafka may hear of its offsets. ``payload``: its pickled state, if the loop has it."""
        assert self.consumer is not None and self.engine is not None and self.state is not None
        if crashpoints.ARMED:
            crashpoints.hit("after_checkpoint")
        self.version = self.engine.version = plan.version
        self.published = published
        if plan.seq >= self.point.seq:
            meta = self.meta(plan)
            meta.published = published
            self.point = RewindPoint(payload, meta if payload is not None else None, plan.seq)
            self.handled.drop_before(plan.seq)
        covered = plan.offsets
        self.first_seen = {k: o for k, o in self.first_seen.items() if k not in covered}
        self.guard.covered(covered)
        self.poisoned = {(t, p, o): e for (t, p, o), e in self.poisoned.items()
                         if o >= covered.get(tp_key(t, p), 0)}
        self.since_checkpoint -= plan.since
        self.last_checkpoint = time.monotonic()
        self.retry_at = 0.0
        self.uncommitted = covered
        self.report_budget()
        how = f" ({writer.kind})" if writer is not None else ""
        log.info("checkpoint v%d (%s): %d events, %d bytes, loop blocked %.1f ms%s%s, metrics %s",
                 plan.version, reason, plan.events, outcome.payload_bytes, blocked * 1000, how,
                 f" (then {waited * 1000:.1f} ms waiting for it to finish)" if waited else "",
                 outcome.metrics)

    def report(self, progress: Progress) -> None:
        assert self.state is not None and self.consumer is not None
        progress.report(events=self.events, learned=self.state.learned,
                        dead_letters=sum(self.dead_letters.values()), version=self.version,
                        metrics=self.state.metrics.report(), behind=lag(self.consumer))

    def report_budget(self) -> None:
        """Say when the feature budget is spent and features are dropped: at a checkpoint, at
        most every ``BUDGET_REPORT_S`` seconds."""
        assert self.state is not None
        budget, now = self.state.features, time.monotonic()
        if budget.refused > self.refused_reported and now >= self.budget_reported_at + BUDGET_REPORT_S:
            log.warning("the feature budget is spent (--max-features %d): %d features dropped from "
                        "events so far; new features are not learned", budget.max_features, budget.refused)
            self.refused_reported, self.budget_reported_at = budget.refused, now

    def commit_offsets(self, wait: bool) -> None:
        """Tell Kafka the last checkpoint's offsets, if it has not heard of them: every
        --commit-interval, when partitions leave and at shutdown (``wait``: the only time the
        loop waits for the answer). They only feed lag monitoring: a restart reads its offsets
        from the checkpoint, and a commit that fails is logged and covered by the next."""
        assert self.consumer is not None
        covered = self.uncommitted
        if covered is None:
            return
        offsets = {(tp.topic, tp.partition): covered[k] for tp in self.consumer.assignment()
                   if (k := tp_key(tp.topic, tp.partition)) in covered}
        commit(self.consumer, offsets, wait=wait)
        self.uncommitted = None
        self.last_commit = time.monotonic()

    def on_assign(self, consumer: rdkafka.Consumer, partitions: list[rdkafka.TopicPartition]) -> None:
        """Start each assigned partition at the checkpoint's offset, or at start_from."""
        assert self.merge is not None
        fresh = rdkafka.OFFSET_BEGINNING if self.settings.start_from == "earliest" else rdkafka.OFFSET_END
        for tp in partitions:
            tp.offset = self.offsets.get(tp_key(tp.topic, tp.partition), fresh)
        consumer.assign(partitions)
        self.merge.assign((tp.topic, tp.partition) for tp in partitions)
        self.handled.forget()
        log.info("assigned %s", sorted((tp.topic, tp.partition) for tp in partitions))

    def on_revoke(self, _consumer: rdkafka.Consumer, partitions: list[rdkafka.TopicPartition]) -> None:
        """Checkpoint what was learned from the partitions before they go; what is buffered
        and not learned is read again by whoever owns them next."""
        assert self.merge is not None
        if partitions and not self.closing:
            if crashpoints.ARMED:
                crashpoints.hit("in_revocation")
            self.checkpoint("revocation")
            self.commit_offsets(wait=False)
        self.merge.assign(())
        self.handled.forget()
