"""Drift alerts: a River drift detector on the champion's per-event error.

The error of a labelled event is what the prequential metrics score, at the moment they score
it (when the label is learned, on time or late): 0 or 1 for a classifier (its prediction was
wrong), the absolute error for a regressor. The detector is part of the model's state and
checkpoint, so after a restart it goes on as if there had been none, and fires at the same
events.

>>> watch = DriftWatch("drift.PageHinkley(min_instances=10, threshold=5)", "regression")
>>> fired = [i for i in range(200) if watch.update(0.0 if i < 100 else 10.0, 0.0) is not None]
>>> fired
[100]
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from river import base

from stream_learner.errors import ModelSpecError
from stream_learner.models import build_expression

ON_DRIFT = ("alert", "start-challenger")
RECENT = 100  # the last errors an alert calls "after"; the ones before them since the last alert are "before"


def build_detector(spec: str, task: str) -> base.DriftDetector | base.BinaryDriftDetector:
    """A fresh detector of ``spec`` (a River expression); ``ModelSpecError`` names the flag."""
    detector = build_expression(spec, flag="--drift-detector")
    if not isinstance(detector, base.DriftDetector | base.BinaryDriftDetector):
        raise ModelSpecError(f"--drift-detector: {spec!r} is a {type(detector).__name__}, not a River "
                             "drift detector (drift.ADWIN(), drift.PageHinkley(), drift.binary.DDM(), ...)")
    if isinstance(detector, base.BinaryDriftDetector) and task == "regression":
        raise ModelSpecError(f"--drift-detector: {spec!r} watches 0/1 errors; a regressor's error is a "
                             "number (use drift.ADWIN(), drift.PageHinkley() or drift.KSWIN())")
    return detector


@dataclass(frozen=True)
class Drift:
    """One alert: the detector fired on the error of ``event_id``."""

    event_id: str
    count: int  # the detector's drifts so far, this one included
    error_before: float | None  # mean error since the previous alert, before the last RECENT
    error_after: float  # mean of the last RECENT errors (or fewer), this one included


class DriftWatch:
    """A detector on one model's errors; picklable as part of its state."""

    def __init__(self, spec: str, task: str, *, start_challenger: bool = False) -> None:
        self.spec = spec
        self.task = task
        self.detector = build_detector(spec, task)
        self.start_challenger = start_challenger
        self.drifts = 0
        self.errors: deque[float] = deque(maxlen=10_000)  # since the last alert, bounded

    def fresh(self) -> DriftWatch:
        """The same detector, untrained (for a new champion)."""
        return DriftWatch(self.spec, self.task, start_challenger=self.start_challenger)

    def update(self, y: Any, y_pred: Any, event_id: str = "") -> Drift | None:
        """Feed the error of one scored prediction; the alert when the detector fires on it."""
        error = abs(float(y) - float(y_pred)) if self.task == "regression" else float(y_pred != y)
        detector: Any = self.detector
        detector.update(error)
        self.errors.append(error)
        if not detector.drift_detected:
            return None
        self.drifts += 1
        errors = list(self.errors)
        self.errors.clear()
        after, before = errors[-RECENT:], errors[:-RECENT]
        return Drift(event_id, self.drifts, sum(before) / len(before) if before else None,
                     sum(after) / len(after))
