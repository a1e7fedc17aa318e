"""The continually-learning consumer (``stream-learner learn``): the loop that composes the
exactly-once protocol's parts.

- ``InstanceSlot`` (consumers/instance.py): this process's instance id on its host.
- ``WriterLease`` (consumers/lease.py): only the lease's holder learns; another learner for
  the same model waits as a standby and takes over when the lease expires or is released.
- ``Checkpointer`` (consumers/checkpointer.py): plan -> flush -> write fenced -> commit.
- ``ReplayGuard`` (consumers/replay.py): what an earlier run already published or
  dead-lettered, so that a replay does not send it twice.
- ``Rewinder`` (consumers/rewind.py): back to the last consistent state after the model
  raised on an event.
- ``Outbox`` (consumers/outbox.py): a record's prediction, shadow predictions and drift alerts.
- ``Steering`` (consumers/steering.py): promotions and rollbacks, applied at a checkpoint.

On start and on every assignment the consumer seeks to the checkpoint's offsets, so each
labelled event is learned exactly once across crashes, and predictions are published once.
"""

from __future__ import annotations

import logging
import pickle
import threading

from consumers import crashpoints
from consumers.checkpointer import Checkpointer, Cursor, Plan
from consumers.clients.base import Clients, Consumer, Record
from consumers.dead_letters import Author, DeadLetters
from consumers.instance import InstanceSlot
from consumers.kafka_io import Poller, Publisher, source_of
from consumers.lease import WriterLease
from consumers.ordering import EventTimeMerge
from consumers.outbox import Outbox
from consumers.progress import BudgetReport, Progress, refresh
from consumers.publish_gate import PublishGate
from consumers.replay import ReplayGuard
from consumers.resume import configure, load_latest, output_positions, sent_after
from consumers.rewind import Rewind, Rewinder, follows_on
from consumers.steering import Steering
from consumers.step import RecordStep
from stream_learner.checkpoint import CheckpointMeta, read_offsets
from stream_learner.config import Settings
from stream_learner.engine import Engine, ModelState
from stream_learner.errors import InvalidEvent
from stream_learner.events import Partition
from stream_learner.observe.board import Board
from stream_learner.state.base import ModelStore

log = logging.getLogger("stream_learner.learner")

# Rejections after which the model may be half-updated: back to the rewind point.
REWINDS = ("model_error", "internal_error")


class Learner:
    """One learner per model: it alone writes the model's checkpoints."""

    def __init__(self, settings: Settings, store: ModelStore, clients: Clients) -> None:
        self.settings = settings
        self.store = store
        self.clients = clients
        self.owner = settings.instance_id  # the instance id, once its slot is taken (InstanceSlot)
        self.step = RecordStep(settings, "learn")
        self.offsets: dict[Partition, int] = {}  # the next offsets, consistent with self.state
        self.first_seen: dict[Partition, int] = {}  # partitions the rewind point does not cover yet
        self.events = 0
        self.predicted = 0  # events predicted by this process
        self.board = Board(settings.model, "learn", instance=settings.instance_id)
        self.guard = ReplayGuard()
        self.rewinds = Rewinder()
        self.budget_report = BudgetReport()
        self.closing = False  # the consumer's close revokes its partitions: no checkpoint then
        self.state: ModelState = ModelState.fresh(settings.model_spec, settings.task)
        self.engine = Engine(self.state)
        self.merge = EventTimeMerge()
        self.consumer: Consumer | None = None
        self.publisher: Publisher | None = None
        self.letters: DeadLetters | None = None
        self.checkpoints: Checkpointer | None = None
        self.steering: Steering | None = None
        self.outbox: Outbox | None = None

    def restore(self, state: ModelState, meta: CheckpointMeta) -> None:
        """Go on from ``state``, consistent with ``meta``'s position in the stream."""
        assert self.letters is not None
        self.state = state
        self.offsets, self.events = read_offsets(meta.offsets), meta.events
        self.letters.counts = dict(meta.dead_letters)  # carried across restarts by the checkpoint
        configure(state, self.settings)
        self.engine = Engine(state, max_classes=self.settings.max_classes)

    # -- what the checkpointer asks of the loop (checkpointer.Stream) -----------------------

    def cursor(self) -> Cursor:
        assert self.letters is not None
        return Cursor(dict(self.offsets), self.events, dict(self.letters.counts), self.rewinds.handled.seq,
                      still_ahead=self.guard.ahead_of(self.offsets))

    def saved(self, plan: Plan, meta: CheckpointMeta, payload: bytes | None, *, nbytes: int,
              pause_s: float) -> None:
        covered = plan.cursor.offsets
        self.rewinds.saved(plan.cursor.seq, payload, meta, covered)
        self.first_seen = {k: o for k, o in self.first_seen.items() if k not in covered}
        self.guard.covered(covered)
        self.budget_report(self.state.features)
        self.board.checkpointed(version=plan.version, nbytes=nbytes, pause_s=pause_s)

    # -- the loop ---------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        s = self.settings
        with (InstanceSlot(s) as slot,
              WriterLease(self.store.clone(), s.model, ttl=s.lease_ttl, owner=slot.id) as lease):
            self.owner = slot.id
            self.board.set(instance=slot.id, lease_held=False)
            if lease.wait_for(stop, beat=self.board.beat):
                self.board.set(lease_held=True)
                self.run_as_writer(stop, lease)

    def run_as_writer(self, stop: threading.Event, lease: WriterLease) -> None:
        s = self.settings
        state, meta = load_latest(s, self.store)
        self.consumer = self.clients.consumer("learn")
        limit = self.clients.record_limit(s.dead_letters_to("learn"))
        self.publisher = Publisher(self.clients.producer("stream-learner-learn", limit), s)
        self.letters = DeadLetters(self.publisher, topic=s.dead_letters_to("learn"),
                                   author=Author(s.model, "learn", self.owner), max_bytes=limit)
        self.checkpoints = Checkpointer(s, self.store, self, publisher=self.publisher, token=lease.token,
                                        resumed=meta)
        self.steering = Steering(s, self.store.clone(), self.publisher, self.board)
        if s.publish_gate:
            self.checkpoints.gate = PublishGate(s, self.store, state.task)
        self.outbox = Outbox(s, self.publisher, self.guard, self.board)
        try:
            self.restore(state, meta)
            self.board.loaded(meta.version)
            if meta.version == 0:
                # v1 records where the output topics end, so that a crash before v2 can
                # still find (and not repeat) the predictions and dead letters sent since.
                self.checkpoints.published = output_positions(s, self.clients)
                self.checkpoints.write("initial", force=True)
            else:
                self.guard.recover(sent_after(s, self.clients, meta))
            topics = [s.events_topic, *([s.labels_topic] if s.labels_topic else [])]
            self.consumer.subscribe(topics, on_assign=self.on_assign, on_revoke=self.on_revoke)
            self.loop(stop, lease)
        finally:
            self.checkpoints.abort()
            self.closing = True
            self.consumer.close()
            self.letters.summarise(force=True)
            self.publisher.close()

    def loop(self, stop: threading.Event, lease: WriterLease) -> None:
        assert self.consumer is not None and self.letters is not None and self.checkpoints is not None
        assert self.steering is not None
        s, checkpoints, rewinds = self.settings, self.checkpoints, self.rewinds
        poller = Poller(self.consumer, s.max_poll_records, 0.1, s.busy_poll_ms / 1000)
        progress = Progress(s.progress_interval)
        resume = False
        while not stop.is_set():
            lease.check()
            # Rebalance callbacks (on_assign, on_revoke) run in here, and their errors come out.
            # After a rewind or a snapshot, records are buffered already: no waiting for more.
            self.merge.add(poller(wait=not resume))
            resume = False
            try:
                for record in self.merge.drain():
                    self.handle(record)
                    if rewinds.snapshot_now:
                        resume = True
                        break
            except Rewind:
                self.rewind()
                resume = True
                continue
            if rewinds.snapshot_now:
                self.keep_rewind_point()
                self.check_model()
            checkpoints.advance()
            self.letters.summarise()
            self.watch(progress)
            if checkpoints.commit_due():
                checkpoints.commit(self.consumer, wait=False)
            if checkpoints.due() or (checkpoints.background is None and self.steering.due()):
                self.steer()
            if checkpoints.due():
                if checkpoints.writes_off_loop:
                    checkpoints.start("interval")
                else:
                    checkpoints.write("interval")
        checkpoints.write("shutdown")
        checkpoints.commit(self.consumer, wait=True)

    def steer(self) -> None:
        """Before a checkpoint: promote a challenger if an operator or the policy says so."""
        assert self.steering is not None and self.checkpoints is not None
        new = self.steering(self.state, version=self.checkpoints.version + 1, events=self.events)
        if new is not None:
            self.state = new
            self.engine = Engine(new, max_classes=self.settings.max_classes)
            self.checkpoints.changed = True
            # Going on from a rollback: predictors follow the learner again from its next version.
            self.checkpoints.reclaim = new.history[-1]["action"] == "rollback"

    def watch(self, progress: Progress) -> None:
        """The board's figures after a batch (those that cost more, every second), and the
        progress line when due."""
        assert self.consumer is not None and self.letters is not None and self.checkpoints is not None
        board, state = self.board, self.state
        board.batch(events=self.events, predicted=self.predicted, learned=state.learned,
                    dead_letters=self.letters.counts, version=self.checkpoints.version)
        if board.due():
            refresh(board, state, self.consumer.lags())
        if progress.due():
            progress.report(board.snapshot(), learned=state.learned)

    def handle(self, record: Record) -> None:
        """One record: predict and learn, then publish its prediction or its dead letter
        (unless an earlier run did), and move the offsets past it."""
        assert self.outbox is not None and self.letters is not None and self.checkpoints is not None
        source = source_of(record)
        offset = source.offset
        where = (source.topic, source.partition, offset)
        tpk = (source.topic, source.partition)
        if tpk not in self.offsets and tpk not in self.first_seen:
            self.first_seen[tpk] = offset
        raw = record.value()
        rewinds = self.rewinds
        rewinds.handled.add(record)
        poison = rewinds.poisoned.get(where) if rewinds.poisoned else None
        try:
            if poison is not None:
                raise poison
            answer = self.step(self.engine, raw, source, self.checkpoints.version)
        except InvalidEvent as exc:
            if exc.reason in REWINDS and poison is None:
                # Logged as its dead letter is, once per reason and then summed up.
                log.debug("model error at %s, rewinding: %s", source, exc)
                raise rewinds.poison(where, exc) from exc
            if poison is not None:
                rewinds.dead_lettered(poison)
            self.letters.count(exc, source)
            if not self.guard.sent(tpk, where):
                self.letters.send(raw, exc, source, self.checkpoints.version)
                self.guard.answer(tpk, offset)
        else:
            rewinds.model_errors = 0
            if crashpoints.ARMED:
                crashpoints.hit("after_predict")
            if answer is not None:
                self.predicted += 1
                self.outbox.answer(tpk, where, answer)
            if self.engine.alerts:
                self.outbox.alerts(self.engine, tpk, offset, version=self.checkpoints.version)
        self.offsets[tpk] = offset + 1
        self.events += 1
        self.checkpoints.since += 1

    def check_model(self) -> None:
        """Stop on a broken spec (``Rewinder.broken``), checkpointed first: a restart goes on
        past these events."""
        assert self.checkpoints is not None
        broken = self.rewinds.broken(self.settings, learned=self.state.learned)
        if broken is not None:
            self.checkpoints.write("stopping: the model cannot learn", force=True)
            raise broken

    def keep_rewind_point(self) -> None:
        """A snapshot in memory of the state as it is now, as the point the next rewind goes to."""
        assert self.checkpoints is not None
        checkpoints = self.checkpoints
        meta = checkpoints.header(checkpoints.version, self.cursor(), checkpoints.published)
        payload = pickle.dumps(self.state, protocol=pickle.HIGHEST_PROTOCOL)
        self.rewinds.keep(payload, meta, checkpoints.since, dict(self.offsets))

    def rewind(self) -> None:
        """Back to the rewind point; the poisoned event is dead-lettered when it comes round
        again. What was handled since is replayed from memory, or read again from Kafka."""
        assert self.consumer is not None and self.checkpoints is not None
        self.checkpoints.finish()
        point, handled = self.rewinds.point, self.rewinds.handled
        replay = handled.since(point.seq)
        if point.payload is not None and point.meta is not None:
            self.restore(pickle.loads(point.payload), point.meta)  # pickled by this very process
        else:
            self.restore(*load_latest(self.settings, self.store, logged=False))
        self.checkpoints.since = point.since
        handled.restart_at(point.seq)
        if replay is not None and follows_on([*replay, *self.merge.heads()], self.offsets, self.first_seen):
            self.merge.push_front(replay)
            return
        self.merge.clear()
        for partition in self.consumer.assignment():
            offset = self.offsets.get(partition, self.first_seen.get(partition))
            if offset is not None:
                self.consumer.seek(partition, offset)

    def on_assign(self, partitions: list[Partition]) -> dict[Partition, int]:
        """Start each assigned partition at the checkpoint's offset (the others at
        --start-from)."""
        self.merge.assign(partitions)
        self.rewinds.handled.forget()
        log.info("assigned %s", sorted(partitions))
        return {p: self.offsets[p] for p in partitions if p in self.offsets}

    def on_revoke(self, partitions: list[Partition]) -> None:
        """Checkpoint what was learned from the partitions before they go; what is buffered
        and not learned is read again by whoever owns them next."""
        if partitions and not self.closing and self.checkpoints is not None:
            assert self.consumer is not None
            if crashpoints.ARMED:
                crashpoints.hit("in_revocation")
            self.checkpoints.write("revocation")
            self.checkpoints.commit(self.consumer, wait=False)
        self.merge.assign(())
        self.rewinds.handled.forget()
