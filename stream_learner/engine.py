"""The prequential step: predict, then learn from the label if the event has one.

Pure and in-memory: no Kafka, no Redis. The caller feeds decoded events, gets ``Prediction``
values back, and encodes and sends them wherever it likes: the service encodes each one
between ``predict`` and ``learn`` (consumers/step.py), so that a prediction it cannot send is
refused before the model learns.

>>> from stream_learner.events import Event, Source
>>> state = ModelState.fresh("preprocessing.StandardScaler() | linear_model.LogisticRegression()")
>>> engine = Engine(state)
>>> e = Event("e-1", None, None, {"amount": 3.0}, True, Source("events", 0, 0))
>>> first = engine.predict(e)
>>> first.y_pred, first.proba, first.learned
(False, {False: 0.5, True: 0.5}, 0)
>>> engine.learn(first)
>>> state.learned, engine.process(e).learned
(1, 1)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from river import base

from stream_learner.budget import MAX_FEATURES, FeatureBudget
from stream_learner.errors import InvalidEvent
from stream_learner.events import Event, Label, LateLabel, Prediction
from stream_learner.metrics import PrequentialMetrics
from stream_learner.models import build_model, infer_task
from stream_learner.pending import PendingLabels, Waiting

_MASK = 2**64 - 1
MAX_CLASSES = 1000


def id_hash(event_id: str) -> int:
    """64-bit hash of an event id; a learned-id digest is the sum of these mod 2**64, so a
    missing or duplicated event changes it."""
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "big")


@dataclass
class ModelState:
    """Everything a checkpoint's signed payload holds besides the offsets."""

    model: base.Estimator
    spec: str
    task: str
    metrics: PrequentialMetrics
    learned: int = 0
    classes: list[Label] = field(default_factory=list)
    digest: int = 0  # sum of id_hash() of every learned event id, mod 2**64: exactly-once evidence
    pending: PendingLabels | None = None  # unlabelled events awaiting a late label
    default_label: Label | None = None  # learned when a pending event expires (None: drop it)
    features: FeatureBudget = field(default_factory=FeatureBudget)

    @classmethod
    def fresh(cls, spec: str, task: str = "auto", window: int = 1000,
              pending: PendingLabels | None = None, default_label: Label | None = None,
              max_features: int = MAX_FEATURES) -> ModelState:
        model = build_model(spec)
        task = infer_task(model, task)
        return cls(model, spec, task, PrequentialMetrics(task, window), pending=pending,
                   default_label=default_label, features=FeatureBudget(max_features))


class Engine:
    """Runs events through one ``ModelState``; ``learn=False`` serves it frozen: then it predicts
    on the features the model knows only (``FeatureBudget.restrict``), so that serving never
    changes the model."""

    def __init__(self, state: ModelState, *, learn: bool = True, max_classes: int = MAX_CLASSES) -> None:
        self.state = state
        self.learns = learn
        self._is_classifier = state.task != "regression"
        self._max_classes = 2 if state.task == "binary" else max_classes
        self._classes = set(state.classes)

    def check(self, event: Event) -> None:
        """Refuse what the model must not see: a third class for a binary model, or a class
        beyond ``max_classes`` for a multiclass one."""
        if self.learns and event.y is not None and self._is_classifier:
            self._check_class(event.y)

    def _check_class(self, y: Label) -> None:
        if y not in self._classes:
            classes = self.state.classes
            if len(classes) >= self._max_classes:
                shown = classes if len(classes) <= 10 else f"the {len(classes)} classes it knows"
                raise InvalidEvent("new_class", f"label {y!r} is not one of {shown}")
            classes.append(y)
            self._classes.add(y)

    def _predict(self, x: dict[str, Any]) -> tuple[Label | None, dict[Any, float] | None]:
        model: Any = self.state.model
        if self._is_classifier:
            proba: dict[Any, float] = model.predict_proba_one(x)
            # The argmax, as River's Classifier.predict_one takes it (first maximum wins).
            return (max(proba, key=proba.__getitem__) if proba else None), proba
        return model.predict_one(x), None

    def predict(self, event: Event) -> Prediction:
        """What the model says of ``event``, as it is now; the model does not change (a frozen
        engine predicts on the features the model knows only)."""
        self.check(event)
        state = self.state
        x = state.features.admit(event.x) if self.learns else state.features.restrict(event.x)
        try:
            y_pred, proba = self._predict(x)
        except Exception as exc:
            raise InvalidEvent("model_error", f"predict failed: {type(exc).__name__}: {exc}") from exc
        return Prediction(event, y_pred, proba, state.learned, x)

    def learn(self, prediction: Prediction) -> None:
        """Score the prediction and learn the event's label; an event without one waits for
        its late label (when a labels topic is configured). A frozen engine learns nothing."""
        if not self.learns:
            return
        state, event = self.state, prediction.event
        pending = state.pending
        y = event.y
        if y is None and pending is not None:
            y = pending.claim(event.id)  # its label came first
        if y is not None:
            state.metrics.update(y, prediction.y_pred, prediction.proba)
            self._learn(event.id, prediction.x, y)
            if pending is not None:
                self._expire(pending.advance(event.ts))
        elif pending is not None:
            ts = event.ts if event.ts is not None else pending.watermark
            waiting = Waiting(prediction.x, prediction.y_pred, prediction.proba, ts)
            self._expire(pending.add(event.id, waiting))

    def process(self, event: Event) -> Prediction:
        """``predict``, then ``learn``: River's prequential step, for use in-process."""
        prediction = self.predict(event)
        self.learn(prediction)
        return prediction

    def label(self, label: LateLabel) -> bool:
        """Learn a late label with the features kept for its event, and score the prediction
        made back then; False when no event waits for it (late, duplicate or unknown)."""
        pending = self.state.pending
        if pending is None:
            raise InvalidEvent("unexpected_label", "this learner keeps no pending events")
        if self._is_classifier:
            self._check_class(label.y)
        waiting = pending.take(label.id, label.y, label.ts)
        if waiting is not None:
            self.state.metrics.update(label.y, waiting.y_pred, waiting.proba)
            self._learn(label.id, waiting.x, label.y)
        self._expire(pending.advance(label.ts))
        return waiting is not None

    def _learn(self, event_id: str, x: dict[str, Any], y: Label) -> None:
        try:
            self.state.model.learn_one(x, y)
        except Exception as exc:
            raise InvalidEvent("model_error", f"learn failed: {type(exc).__name__}: {exc}") from exc
        self.state.learned += 1
        self.state.digest = (self.state.digest + id_hash(event_id)) & _MASK

    def _expire(self, closed: list[tuple[str, Waiting]]) -> None:
        """Expired or evicted events: dropped, or learned with the default label (unscored)."""
        if self.state.default_label is not None:
            for event_id, waiting in closed:
                self._learn(event_id, waiting.x, self.state.default_label)
