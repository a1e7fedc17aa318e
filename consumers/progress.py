"""What a learner is doing, in one line every ``--progress-interval`` seconds.

While events come: how many per second, learned, dead letters, the consumer's lag, the model
version and the first rolling metric. Once they stop: one "idle, caught up" line, then nothing
until they come again. The figures are the board's, as ``GET /metrics`` shows them: the
counts are this process's, and each line carries them all as ``figures`` (a field of its
own in ``--log-format json``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from stream_learner.budget import FeatureBudget
from stream_learner.engine import ModelState
from stream_learner.events import Partition
from stream_learner.observe.board import Board, Snapshot

log = logging.getLogger("stream_learner.learner")


class Progress:
    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.at = time.monotonic()
        self.events = 0
        self.idle = False

    def due(self) -> bool:
        return time.monotonic() - self.at >= self.interval

    def report(self, snap: Snapshot, *, learned: int) -> None:
        """One line of ``snap``'s figures; ``learned``: by the model, in all its runs."""
        now = time.monotonic()
        events = snap.outcomes.get("predicted", 0) + snap.outcomes.get("dead_lettered", 0)
        handled, seconds = events - self.events, now - self.at
        self.at, self.events = now, events
        lag = sum(snap.lags.values()) if len(snap.lags) == snap.assigned else None
        figures: dict[str, Any] = {
            "events_per_second": round(handled / seconds, 1), "events": dict(snap.outcomes),
            "dead_letters": dict(snap.dead_letters), "lag": lag, "model_version": snap.version,
            "learned_in_all": learned, "prequential": dict(snap.metrics)}
        extra = {"figures": figures}
        if handled == 0:
            if not self.idle:
                log.info("idle, caught up (lag %s): %d learned, model v%d", lag, learned, snap.version,
                         extra=extra)
                self.idle = True
            return
        self.idle = False
        rolling = next(((k, v) for k, v in snap.metrics.items() if "@" in k), None)
        shown = f", {rolling[0]} {rolling[1]}" if rolling else ""
        log.info("%.0f events/s, %d learned, %d dead letters, lag %s, model v%d%s", handled / seconds,
                 learned, snap.outcomes.get("dead_lettered", 0), "?" if lag is None else lag, snap.version,
                 shown, extra=extra)


class BudgetReport:
    """Says when the feature budget is spent and features are dropped: at most every
    ``interval`` seconds, and only when more were dropped since."""

    def __init__(self, interval: float = 30.0) -> None:
        self.interval = interval
        self.reported = 0  # features dropped, as last logged
        self.at = -interval

    def __call__(self, budget: FeatureBudget) -> None:
        now = time.monotonic()
        if budget.refused > self.reported and now >= self.at + self.interval:
            log.warning("the feature budget is spent (--max-features %d): %d features dropped from "
                        "events so far; new features are not learned", budget.max_features, budget.refused)
            self.reported, self.at = budget.refused, now


def refresh(board: Board, state: ModelState, lags: dict[Partition, int | None]) -> None:
    """The board's figures that cost more than a batch's counts: metrics, lags, pending labels
    and the challengers'."""
    pending = None if state.pending is None else len(state.pending.entries)
    challengers = {name: {"spec": c.spec, "learned": c.learned, "metrics": c.metrics.report(),
                          "error": c.error} for name, c in state.challengers.items()}
    board.refresh(metrics=state.metrics.report(), lags=lags, pending_labels=pending,
                  challengers=challengers)
    board.set(spec=state.spec, learned_total=state.learned)
