"""The learner's checkpoints: plan -> flush -> write fenced -> commit.

A checkpoint is decided at one instant of the loop (a ``Plan``: where the loop stands, which the
model's state is consistent with). Then, in order:

1. every send made before the plan is acknowledged (a checkpoint never covers a prediction or
   a dead letter that may still be lost);
2. the signed record is written to the store, atomically and fenced by the writer's token;
3. the loop hears that it is saved (``Stream.saved``: the new rewind point);
4. Kafka hears of its offsets (``commit``), for lag monitoring only: a restart reads its
   offsets from the checkpoint.

Checkpoints during the run are written off the loop (consumers/background_checkpoint.py): the
loop stops for the snapshot, not for the flush or the write. A model that pickles within
``--checkpoint-inline-bytes`` is pickled in the loop; a larger one by a forked child, whose
pause is the fork's (straight away once a checkpoint has shown the model to be larger). The
first, the last and those at a rebalance are written in the loop (``write``), since nothing
may happen meanwhile.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Protocol

from consumers import crashpoints
from consumers.background_checkpoint import (
    BackgroundCheckpoint,
    ForkedCheckpoint,
    Outcome,
    PickledCheckpoint,
)
from consumers.clients.base import Consumer
from consumers.kafka_io import Publisher
from consumers.publish_gate import PublishGate
from stream_learner.checkpoint import (
    CheckpointMeta,
    header_offsets,
    read_offsets,
    sealed,
    verify_record,
)
from stream_learner.config import Settings
from stream_learner.engine import ModelState
from stream_learner.errors import OutOfOrder, StoreUnavailable
from stream_learner.events import Partition
from stream_learner.state.base import ModelStore, SaveRules

log = logging.getLogger("stream_learner.learner")

RETRY_MIN, RETRY_MAX = 0.5, 30.0  # seconds between checkpoint attempts while Redis is down


@dataclass(frozen=True)
class Cursor:
    """Where the loop stands: what the model's state is consistent with."""

    offsets: dict[Partition, int]  # the next offset to learn of each partition
    events: int  # records handled, over the model's life
    dead_letters: dict[str, int]  # reason -> count, over the model's life
    seq: int  # records handled by this process (Handled.seq)
    # Predictions or dead letters beyond these offsets that an earlier run sent already.
    still_ahead: bool = False


@dataclass(frozen=True)
class Plan:
    """A checkpoint decided at one instant of the loop."""

    version: int
    cursor: Cursor
    since: int  # events since the previous checkpoint
    sends: int  # the sends made before it, which must all be acknowledged first


class Stream(Protocol):
    """What the checkpointer asks of the loop it checkpoints."""

    state: ModelState

    def cursor(self) -> Cursor:
        """Where the loop stands now."""

    def saved(self, plan: Plan, meta: CheckpointMeta, payload: bytes | None, *, nbytes: int,
              pause_s: float) -> None:
        """``plan`` is saved as ``meta``; ``payload``: its pickled state, if the loop has it;
        ``nbytes`` long; it held the loop up for ``pause_s`` seconds."""


@dataclass
class _InFlight:
    """A checkpoint being written off the loop."""

    writer: BackgroundCheckpoint
    plan: Plan
    reason: str
    blocked: float  # seconds of the running loop spent on it so far
    # Seconds spent waiting for it to finish when the loop could not go on without it: at
    # shutdown, before a rewind or an inline checkpoint.
    waited: float = 0.0


class Checkpointer:
    """Writes one model's checkpoints, as the holder of its writer lease (``token``), from the
    store's latest (``resumed``)."""

    def __init__(self, settings: Settings, store: ModelStore, stream: Stream, *,
                 publisher: Publisher, token: int, resumed: CheckpointMeta) -> None:
        self.settings = settings
        self.store = store
        self.stream = stream
        self.publisher = publisher
        self.token = token
        self.version = resumed.version
        self.failures = resumed.checkpoint_failures
        # Where the predictions and dead-letter topics ended, as of the latest checkpoint.
        self.published = read_offsets(resumed.published)
        self.since = 0  # events since the latest checkpoint
        self.changed = False  # the state changed without an event (a promotion): checkpoint it
        self.reclaim = False  # the learner went on from a rollback: serve its next version
        self.gate: PublishGate | None = None
        self.last_at = time.monotonic()
        self.retry_at = 0.0
        self.background: _InFlight | None = None
        self.last_bytes: int | None = None  # the last background checkpoint's size, once known
        self.uncommitted: dict[Partition, int] | None = None  # the latest offsets, till Kafka hears
        self.last_commit = 0.0

    def header(self, version: int, cursor: Cursor, published: dict[Partition, int]) -> CheckpointMeta:
        """The one place a checkpoint header is made."""
        return CheckpointMeta(self.settings.model, version, header_offsets(cursor.offsets),
                              events=cursor.events, dead_letters=dict(cursor.dead_letters),
                              published=header_offsets(published), checkpoint_failures=self.failures,
                              token=self.token)

    @property
    def writes_off_loop(self) -> bool:
        """Whether checkpoints during the run are written off the loop. Some are written by a
        forked child, which needs a store that other processes can reach."""
        return self.store.shared and hasattr(os, "fork")

    def due(self) -> bool:
        s, now = self.settings, time.monotonic()
        if (self.since == 0 and not self.changed) or now < self.retry_at or self.background is not None:
            return False
        return (self.changed or self.since >= s.checkpoint_every
                or now - self.last_at >= s.checkpoint_interval)

    def rules(self, plan: Plan) -> SaveRules:
        """How the plan's version is saved: served unless the publish gate holds it back, and
        taking the served version back from a rollback once the learner goes on from it."""
        serve = self.gate is None or self.gate.passes(self.stream.state, plan.version)
        return SaveRules(self.settings.keep_versions, serve=serve, reclaim=self.reclaim)

    def plan(self) -> Plan:
        return Plan(self.version + 1, self.stream.cursor(), self.since, self.publisher.sent)

    def published_as_of(self, plan: Plan) -> dict[Partition, int]:
        """The output topics' positions for the header, once the plan's sends are reaped. While
        an earlier run's sends lie beyond the plan's offsets, they must stay findable: the scan
        positions for the next restart do not move."""
        published = dict(self.published)
        if not plan.cursor.still_ahead:
            published.update(self.publisher.published)
        return published

    def write(self, reason: str, force: bool = False) -> None:
        """A checkpoint in the loop. A store outage is retried with backoff; a checkpoint in the
        background is finished first."""
        self.finish()
        if self.since == 0 and not force and not self.changed:
            return
        started = time.perf_counter()
        plan = self.plan()  # 0. plan
        self.publisher.flush(plan.sends)  # 1. every send before it acknowledged
        if crashpoints.ARMED:
            crashpoints.hit("after_flush")
        s = self.settings
        header = self.header(plan.version, plan.cursor, self.published_as_of(plan))
        record, meta = sealed(self.stream.state, header, s.hmac_key_id, s.hmac_key.encode())
        if crashpoints.ARMED:
            crashpoints.hit("during_checkpoint")
        try:  # 2. written, fenced
            rules = self.rules(plan)
            self.store.save(s.model, plan.version, record, self.token, rules.keep, serve=rules.serve,
                            reclaim=rules.reclaim)
        except StoreUnavailable as exc:
            self._failed(plan, exc)
            return
        except OutOfOrder as exc:
            self._resolve(plan, exc)
            return
        self._completed(plan, reason, meta, Outcome(len(record.payload), meta.metrics),
                        blocked=time.perf_counter() - started, payload=record.payload)

    def start(self, reason: str) -> None:
        """Hand the next checkpoint to a writer off the loop and go on; ``advance`` finishes it."""
        started = time.perf_counter()
        plan = self.plan()  # 0. plan
        s = self.settings
        meta = self.header(plan.version, plan.cursor, self.published)
        args = (self.store, s.hmac_key_id, s.hmac_key.encode(), self.rules(plan))
        writer: BackgroundCheckpoint | None = None
        # A small model pickles in ~1 - 2 ms: in the loop, that is a shorter pause than a fork()
        # (~5 ms), and it spares the loop the copying of each heap page it writes to after one.
        # Finding out that a model is larger costs the pickling of the limit (~1 ms into a forest).
        limit = s.checkpoint_inline_bytes
        if limit and (self.last_bytes is None or self.last_bytes <= limit):
            writer = PickledCheckpoint.start(self.stream.state, meta, *args, limit=limit)
        if writer is None:
            writer = ForkedCheckpoint.start(self.stream.state, meta, *args)
        self.background = _InFlight(writer, plan, reason, time.perf_counter() - started)

    def advance(self, block: bool = False) -> None:
        """Reap acknowledged sends; release the writer once its sends are all acknowledged,
        and take its outcome when it has one (``block``: wait for both)."""
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
                    self.publisher.flush(plan.sends)  # 1. every send before it acknowledged
                self.publisher.check()
                if crashpoints.ARMED:
                    crashpoints.hit("after_flush")
                # 2. its courier passes during_checkpoint
                writer.release(header_offsets(self.published_as_of(plan)))
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
        if outcome is not None:
            self.background = None
            self._outcome(flight, outcome)

    def _outcome(self, flight: _InFlight, outcome: Outcome) -> None:
        plan, writer = flight.plan, flight.writer
        if isinstance(outcome.error, StoreUnavailable):
            self._failed(plan, outcome.error)
        elif isinstance(outcome.error, OutOfOrder):
            self._resolve(plan, outcome.error)
        elif outcome.error is not None:
            raise outcome.error
        else:
            self.last_bytes = outcome.payload_bytes
            meta = self.header(plan.version, plan.cursor, self.published_as_of(plan))
            self._completed(plan, flight.reason, meta, outcome, blocked=flight.blocked,
                            waited=flight.waited, writer=writer, payload=writer.payload)

    def finish(self) -> None:
        """Wait for the checkpoint in the background, if there is one."""
        self.advance(block=True)

    def abort(self) -> None:
        """The loop failed: the writer in the background must not write."""
        if self.background is not None:
            self.background.writer.abort()
            self.background = None

    def _resolve(self, plan: Plan, exc: OutOfOrder) -> None:
        """A save whose answer was lost (a timeout) may have landed all the same: then the
        store's latest version is that save, signed with this learner's key and token, and the
        learner goes on from it (its next checkpoint follows it at once); else ``exc``."""
        s = self.settings
        try:
            latest = self.store.latest_version(s.model)
            meta = verify_record(self.store.load(s.model, latest), s.signing_keys(),
                                 s.allow_version_mismatch)
        except StoreUnavailable as unavailable:
            self._failed(plan, unavailable)
            return
        if latest < plan.version or meta.token != self.token:
            raise exc
        log.warning("checkpoint v%d was saved although its answer was lost; the next one follows it",
                    latest)
        self.version = latest
        self.retry_at = 0.0

    def _failed(self, plan: Plan, exc: StoreUnavailable) -> None:
        self.failures += 1
        delay = min(RETRY_MAX, RETRY_MIN * 2 ** min(self.failures - 1, 10))
        self.retry_at = time.monotonic() + delay
        log.error("checkpoint v%d failed (%d failures so far), retrying in %.1f s: %s",
                  plan.version, self.failures, delay, exc)

    def _completed(self, plan: Plan, reason: str, meta: CheckpointMeta, outcome: Outcome, *,
                   blocked: float, waited: float = 0.0, writer: BackgroundCheckpoint | None = None,
                   payload: bytes | None = None) -> None:
        if crashpoints.ARMED:
            crashpoints.hit("after_checkpoint")
        self.version = plan.version
        self.published = read_offsets(meta.published)
        self.since -= plan.since
        self.changed = self.reclaim = False
        self.last_at = time.monotonic()
        self.retry_at = 0.0
        self.uncommitted = plan.cursor.offsets
        # 3. the loop hears of it
        self.stream.saved(plan, meta, payload, nbytes=outcome.payload_bytes, pause_s=blocked + waited)
        how = f" ({writer.kind})" if writer is not None else ""
        log.info("checkpoint v%d (%s): %d events, %d bytes, loop blocked %.1f ms%s%s, metrics %s",
                 plan.version, reason, plan.cursor.events, outcome.payload_bytes, blocked * 1000, how,
                 f" (then {waited * 1000:.1f} ms waiting for it to finish)" if waited else "",
                 outcome.metrics)

    def commit(self, consumer: Consumer, wait: bool) -> None:
        """4. Tell Kafka the latest checkpoint's offsets, if it has not heard of them: every
        --commit-interval, when partitions leave and at shutdown (``wait``: the only time the
        loop waits for the answer). A commit that fails is logged and covered by the next."""
        covered = self.uncommitted
        if covered is None:
            return
        consumer.commit({p: covered[p] for p in consumer.assignment() if p in covered}, wait=wait)
        self.uncommitted = None
        self.last_commit = time.monotonic()

    def commit_due(self) -> bool:
        return time.monotonic() - self.last_commit >= self.settings.commit_interval
