"""What changes the champion, at a checkpoint: an operator's request, or the promotion policy.

The learner asks ``Steering`` just before it plans a checkpoint. A promotion is then applied to
the state that checkpoint holds, so it takes effect atomically with it: the events before the
checkpoint's offsets were answered by the former champion, those after by the new one, and a
restart from an earlier checkpoint finds the request again (it is applied once: by its id in the
history). Both models learn every event either way, so where a replay happens to promote does
not change what either has learned.

Each promotion is logged and, with ``--audit-topic``, published there as its history entry,
before the checkpoint that holds it (at least once: a checkpoint that fails is followed by
another promotion of the same request, and another record).
"""

from __future__ import annotations

import json
import logging
import time

from consumers.kafka_io import Publisher
from consumers.resume import configure
from stream_learner.checkpoint import open_record
from stream_learner.config import Settings
from stream_learner.engine import ModelState
from stream_learner.errors import CheckpointError, StoreUnavailable
from stream_learner.observe.board import Board
from stream_learner.promotion import HISTORY_KEPT, Policy, applied, judge, promote, refused
from stream_learner.requests import Request, decode_request
from stream_learner.state.base import ModelStore

log = logging.getLogger("stream_learner.learner")


def policy_of(settings: Settings) -> Policy | None:
    """The promotion policy of ``--promote-on`` and its options; None without it."""
    s = settings
    if not s.promote_on:
        return None
    return Policy(s.promote_on, margin=s.promote_margin, min_events=s.promote_min_events,
                  window=s.promote_window)


class Steering:
    def __init__(self, settings: Settings, store: ModelStore, publisher: Publisher, board: Board) -> None:
        self.settings = settings
        self.store = store
        self.publisher = publisher
        self.board = board
        self.policy = policy_of(settings)
        self._unreadable = b""  # the last request found unreadable: said once
        self._asked_at = time.monotonic()

    def due(self) -> bool:
        """Whether to look for a request while no checkpoint is due (the stream is idle): every
        ``--checkpoint-interval``."""
        return time.monotonic() - self._asked_at >= self.settings.checkpoint_interval

    def __call__(self, state: ModelState, *, version: int, events: int) -> ModelState | None:
        """The new champion's state when a promotion applies now (``version``: the checkpoint
        that will hold it), else None; ``state`` may gain a refused request in its history."""
        self._asked_at = time.monotonic()
        request = self._request(state)
        if request is not None:
            return self._requested(state, request, version=version, events=events)
        if self.policy is None or not state.challengers:
            return None
        return self._judged(state, self.policy, version=version, events=events)

    def _request(self, state: ModelState) -> Request | None:
        try:
            raw = self.store.requested(self.settings.model)
        except StoreUnavailable as exc:
            log.debug("cannot read the operator's request now: %s", exc)
            return None
        if raw is None:
            return None
        try:
            request = decode_request(raw)
        except ValueError as exc:
            if raw != self._unreadable:
                self._unreadable = raw
                log.warning("model %s: ignoring the operator's request: %s", self.settings.model, exc)
            return None
        return None if applied(state, request.id) else request

    def _requested(self, state: ModelState, request: Request, *, version: int, events: int
                   ) -> ModelState | None:
        if request.action == "rollback":
            return self._rollback(state, request, version=version, events=events)
        challenger = state.challengers.get(request.challenger)
        problem = ("no such challenger" if challenger is None
                   else f"it stopped learning: {challenger.error}" if challenger.error
                   else "it has learned no event yet" if not challenger.learned else "")
        if problem:
            reason = f"cannot promote challenger {request.challenger!r}: {problem}"
            log.warning("model %s: %s", self.settings.model, reason)
            refused(state, request.id, reason, version)
            self._audit(state.history[-1])
            return None
        reason = request.reason or "requested by an operator"
        new = promote(state, request.challenger, by="operator", reason=reason, version=version,
                      events=events, request=request.id)
        self._announce(new)
        return new

    def _rollback(self, state: ModelState, request: Request, *, version: int, events: int
                  ) -> ModelState | None:
        """Version ``request.version``'s state, to go on from at the current offsets."""
        s = self.settings
        try:
            ckpt = open_record(self.store.load(s.model, request.version), s.signing_keys(),
                               s.allow_version_mismatch, s.trusted_packages())
        except StoreUnavailable:
            return None  # asked again at the next checkpoint
        except CheckpointError as exc:
            reason = f"cannot roll back to v{request.version}: {exc}"
            log.warning("model %s: %s", s.model, reason)
            refused(state, request.id, reason, version)
            self._audit(state.history[-1])
            return None
        new = ckpt.state
        configure(new, s)
        new.history = [*state.history, {
            "action": "rollback", "at": time.time(), "version": version, "by": "operator",
            "reason": request.reason or "requested by an operator", "request": request.id,
            "to": request.version, "spec": new.spec, "events": events,
            "learned": {"before": state.learned, "after": new.learned},
            "metrics": {"before": state.metrics.report(), "after": new.metrics.report()}}][-HISTORY_KEPT:]
        log.warning("model %s: rolled back to v%d (%d learned; %d were): the events since are not "
                    "learned again", s.model, request.version, new.learned, state.learned)
        self._audit(new.history[-1])
        self.board.mark("rollback", f"to v{request.version}: {new.history[-1]['reason']}")
        return new

    def _judged(self, state: ModelState, policy: Policy, *, version: int, events: int) -> ModelState | None:
        verdict = judge(state, policy)
        if verdict is None:
            return None
        name, reason, figures = verdict
        new = promote(state, name, by="policy", reason=reason, version=version, events=events,
                      figures=figures)
        self._announce(new)
        return new

    def _announce(self, new: ModelState) -> None:
        entry = new.history[-1]
        log.warning("model %s: challenger %s promoted to champion (%s) by %s: %s", self.settings.model,
                    entry["challenger"], entry["spec"], entry["by"], entry["reason"])
        self.board.mark("promotion", f"{entry['challenger']} by {entry['by']}: {entry['reason']}")
        self._audit(entry)

    def _audit(self, entry: dict[str, object]) -> None:
        topic = self.settings.audit_topic
        if topic:
            doc = {"model": self.settings.model, **entry}
            self.publisher.send(topic, json.dumps(doc, sort_keys=True).encode(),
                                key=self.settings.model.encode())
