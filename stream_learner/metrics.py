"""Prequential metrics: River metrics updated with the prediction made before learning.

Each metric is kept twice, over the whole stream and over a rolling window. Updates follow
``river.evaluate.progressive_val_score``: an empty prediction (a model that has seen no
label yet) updates nothing, so the cumulative figures equal River's to the last digit.

>>> m = PrequentialMetrics("binary", window=2)
>>> for y, p in [(True, True), (False, True), (True, True)]:
...     m.update(y, p, {True: 0.6, False: 0.4})
>>> m.report()["Accuracy"], m.report()["Accuracy@2"]
(0.666667, 0.5)
"""

from __future__ import annotations

import math
from typing import Any

from river import metrics, utils


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
        self.rolling = [utils.Rolling(type(m), window_size=window) for m in self.cumulative]
        self.updates = 0

    def update(self, y: Any, y_pred: Any, proba: dict[Any, float] | None) -> None:
        if y_pred is None or (proba is not None and not proba):
            return
        for metric in (*self.cumulative, *self.rolling):
            metric.update(y, proba if proba is not None and _wants_proba(metric) else y_pred)
        self.updates += 1

    def report(self, digits: int = 6) -> dict[str, float | None]:
        """``{"Accuracy": 0.89, "Accuracy@1000": 0.91, ...}``, rounded for display; a value that
        is not a finite real number yet (R2 of a few events) is ``None``."""
        out = {}
        for metric in self.cumulative:
            out[type(metric).__name__] = _shown(metric.get(), digits)
        for metric in self.rolling:
            out[f"{type(metric.obj).__name__}@{self.window}"] = _shown(metric.get(), digits)
        return out


def _shown(value: Any, digits: int) -> float | None:
    if isinstance(value, complex) or not math.isfinite(value):
        return None
    return round(float(value), digits)


def _wants_proba(metric: Any) -> bool:
    inner = metric.obj if isinstance(metric, utils.Rolling) else metric
    return not getattr(inner, "requires_labels", True)
