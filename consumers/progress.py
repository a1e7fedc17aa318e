"""What a learner is doing, in one line every ``--progress-interval`` seconds.

While events come: how many per second, learned, dead letters, the consumer's lag, the model
version and the first rolling metric. Once they stop: one "idle, caught up" line, then nothing
until they come again.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from stream_learner.budget import FeatureBudget

log = logging.getLogger("stream_learner.learner")


class Progress:
    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.at = time.monotonic()
        self.events = 0
        self.idle = False

    def due(self) -> bool:
        return time.monotonic() - self.at >= self.interval

    def report(self, *, events: int, learned: int, dead_letters: int, version: int,
               metrics: dict[str, Any], behind: int | None) -> None:
        now = time.monotonic()
        handled, seconds = events - self.events, now - self.at
        self.at, self.events = now, events
        if handled == 0:
            if not self.idle:
                log.info("idle, caught up (lag %s): %d learned, model v%d", behind, learned, version)
                self.idle = True
            return
        self.idle = False
        rolling = next(((k, v) for k, v in metrics.items() if "@" in k), None)
        shown = f", {rolling[0]} {rolling[1]}" if rolling else ""
        log.info("%.0f events/s, %d learned, %d dead letters, lag %s, model v%d%s",
                 handled / seconds, learned, dead_letters, "?" if behind is None else behind,
                 version, shown)


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
