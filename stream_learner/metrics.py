"""Prequential metrics: River metrics updated with the prediction made before learning.

Each metric is reported twice, over the whole stream and over a rolling window. Updates follow
``river.evaluate.progressive_val_score``: an empty prediction (a model that has seen no
label yet) updates nothing, so the cumulative figures equal River's to the last digit.
The window's figures are computed when reported (at each checkpoint) from the last ``window``
updates, rather than kept current per event with ``river.utils.Rolling``: same values, and
one metric update per event instead of three.

>>> m = PrequentialMetrics("binary", window=2)
>>> for y, p in [(True, True), (False, True), (True, True)]:
...     _ = m.update(y, p, {True: 0.6, False: 0.4})
>>> m.report()["Accuracy"], m.report()["Accuracy@2"]
(0.666667, 0.5)
"""

from __future__ import annotations

import copy
import math
from collections import deque
from typing import Any

from river import metrics


def default_metrics(task: str) -> list[metrics.base.Metric]:
    if task == "regression":
        return [metrics.MAE(), metrics.RMSE(), metrics.R2()]
    if task == "multiclass":
        return [metrics.Accuracy(), metrics.CrossEntropy(), metrics.MacroF1()]
    return [metrics.Accuracy(), metrics.LogLoss(), metrics.F1()]


class PrequentialMetrics:
    """Cumulative and rolling metrics of one task; picklable as part of a checkpoint."""

    def __init__(self, task: str, window: int = 1000) -> None:
        self.task = task
        self.window = window
        self.cumulative = default_metrics(task)
        self.recent: deque[tuple[Any, Any, dict[Any, float] | None]] = deque(maxlen=window)
        self.updates = 0

    def update(self, y: Any, y_pred: Any, proba: dict[Any, float] | None) -> bool:
        """Score one prediction; False when there is none to score (the model knew nothing)."""
        if y_pred is None or (proba is not None and not proba):
            return False
        _update(self.cumulative, y, y_pred, proba)
        self.recent.append((y, y_pred, proba))
        self.updates += 1
        return True

    def rolling(self) -> list[metrics.base.Metric]:
        """The metrics over the last ``window`` updates."""
        out = default_metrics(self.task)
        for y, y_pred, proba in self.recent:
            _update(out, y, y_pred, proba)
        return out

    def over(self, name: str, last: int) -> float | None:
        """Metric ``name`` over the last ``last`` updates (at most the window); None before any,
        or while it is not a finite number."""
        recent = list(self.recent)[-last:] if last < len(self.recent) else self.recent
        if not recent:
            return None
        metric = next(m for m in default_metrics(self.task) if type(m).__name__ == name)
        for y, y_pred, proba in recent:
            _update([metric], y, y_pred, proba)
        value = metric.get()
        return None if isinstance(value, complex) or not math.isfinite(value) else float(value)

    def report(self, digits: int = 6) -> dict[str, float | None]:
        """``{"Accuracy": 0.89, "Accuracy@1000": 0.91, ...}``, rounded for display; a value that
        is not a finite real number yet (R2 of a few events) is ``None``."""
        out = {}
        for metric in self.cumulative:
            out[type(metric).__name__] = _shown(metric.get(), digits)
        for metric in self.rolling():
            out[f"{type(metric).__name__}@{self.window}"] = _shown(metric.get(), digits)
        return out


def _update(ms: list[metrics.base.Metric], y: Any, y_pred: Any, proba: dict[Any, float] | None) -> None:
    for metric in ms:
        metric.update(y, y_pred if proba is None or metric.requires_labels else proba)


def _shown(value: Any, digits: int) -> float | None:
    if isinstance(value, complex) or not math.isfinite(value):
        return None
    return round(float(value), digits)


def merged(parts: list[PrequentialMetrics], digits: int = 6) -> dict[str, float | None]:
    """The cumulative metrics over all of ``parts``' scored events, as if one object had scored
    them all: confusion matrices and means are added exactly; a metric that cannot be added
    (R2) is None.

    >>> a, b, whole = (PrequentialMetrics("binary") for _ in range(3))
    >>> for m, y, p in ((a, True, 0.9), (b, False, 0.8), (b, True, 0.6)):
    ...     proba = {True: p, False: 1 - p}
    ...     _ = m.update(y, p > 0.5, proba), whole.update(y, p > 0.5, proba)
    >>> merged([a, b]) == {k: v for k, v in whole.report().items() if "@" not in k}
    True
    """
    if not parts:
        return {}
    out: dict[str, float | None] = {}
    for i, first in enumerate(parts[0].cumulative):
        total = copy.deepcopy(first)
        addable = True
        for part in parts[1:]:
            addable = addable and _add(total, part.cumulative[i])
        out[type(total).__name__] = _shown(total.get(), digits) if addable else None
    return out


def _add(total: metrics.base.Metric, other: metrics.base.Metric) -> bool:
    """Add ``other``'s scored events into ``total``; False when the metric cannot be added."""
    cm, mean = getattr(other, "cm", None), getattr(other, "_mean", None)
    if cm is not None:
        for y_true, row in cm.data.items():
            for y_pred, weight in row.items():
                total.cm.update(y_true, y_pred, weight)
        return True
    if mean is not None:
        if mean.n:
            total._mean.update(mean.get(), mean.n)
        return True
    return False
