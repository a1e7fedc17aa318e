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
>>> engine.learn(first)  # the challengers' predictions: it has none
()
>>> state.learned, engine.process(e).learned
(1, 1)
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any

from river import base

from stream_learner.budget import MAX_FEATURES, FeatureBudget
from stream_learner.drift import Drift, DriftWatch
from stream_learner.errors import InvalidEvent
from stream_learner.events import Event, Label, LateLabel, Prediction, Source
from stream_learner.metrics import PrequentialMetrics
from stream_learner.models import build_model, infer_task
from stream_learner.pending import PendingLabels, Waiting

log = logging.getLogger("stream_learner.learner")

_MASK = 2**64 - 1
MAX_CLASSES = 1000


def id_hash(event_id: str) -> int:
    """64-bit hash of an event id; a learned-id digest is the sum of these mod 2**64, so a
    missing or duplicated event changes it."""
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "big")


def admit_class(classes: list[Label], y: Label, max_classes: int) -> None:
    """Add ``y`` (not among ``classes``) to them, or refuse it past ``max_classes``."""
    if len(classes) >= max_classes:
        shown = classes if len(classes) <= 10 else f"the {len(classes)} classes it knows"
        raise InvalidEvent("new_class", f"label {y!r} is not one of {shown}")
    classes.append(y)


def predict_x(model: Any, x: dict[str, Any], *, classifier: bool
              ) -> tuple[Label | None, dict[Any, float] | None]:
    """The model's prediction (and a classifier's probabilities); ``model_error`` if it raises."""
    try:
        if classifier:
            proba: dict[Any, float] = model.predict_proba_one(x)
            # The argmax, as River's Classifier.predict_one takes it (first maximum wins).
            return (max(proba, key=proba.__getitem__) if proba else None), proba
        return model.predict_one(x), None
    except Exception as exc:
        raise InvalidEvent("model_error", f"predict failed: {type(exc).__name__}: {exc}") from exc


def learn_x(model: Any, x: dict[str, Any], y: Label) -> None:
    """``learn_one``; ``model_error`` if it raises (the model may be half-updated then)."""
    try:
        model.learn_one(x, y)
    except Exception as exc:
        raise InvalidEvent("model_error", f"learn failed: {type(exc).__name__}: {exc}") from exc


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
    # Challengers by name: models learning from the same events beside this one (the champion),
    # in the same checkpoint; each one's own state, without challengers of its own.
    challengers: dict[str, ModelState] = field(default_factory=dict)
    error: str = ""  # why a challenger stopped learning (it raised); "" while it learns
    # Promotions and operators' actions on this model, oldest first (stream_learner.promotion).
    history: list[dict[str, Any]] = field(default_factory=list)
    drift: DriftWatch | None = None  # the champion's drift detector (--drift-detector)
    started_by: str = ""  # "drift": a challenger that --on-drift start-challenger started

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A checkpoint pickled before a field existed restores with its default.
        self.__dict__.update({"challengers": {}, "error": "", "history": [], "drift": None,
                              "started_by": "", **state})

    def sibling(self, spec: str) -> ModelState:
        """A fresh state of ``spec`` for the same task, with this one's bounds."""
        pending = self.pending
        return ModelState.fresh(spec, self.task, self.metrics.window, default_label=self.default_label,
                                max_features=self.features.max_features,
                                pending=None if pending is None else pending.emptied())

    @classmethod
    def fresh(cls, spec: str, task: str = "auto", window: int = 1000,
              pending: PendingLabels | None = None, default_label: Label | None = None,
              max_features: int = MAX_FEATURES) -> ModelState:
        model = build_model(spec)
        task = infer_task(model, task)
        return cls(model, spec, task, PrequentialMetrics(task, window), pending=pending,
                   default_label=default_label, features=FeatureBudget(max_features))


# A challenger's name and its prediction of an event.
Shadow = tuple[str, Prediction]


@dataclass(frozen=True)
class Alert:
    """The drift detector fired on the record at ``source``, after ``learned`` events;
    ``challenger``: the one it started ("" for none)."""

    drift: Drift
    source: Source
    learned: int
    challenger: str = ""


class Engine:
    """Runs events through one ``ModelState``; ``learn=False`` serves it frozen: then it predicts
    on the features the model knows only (``FeatureBudget.restrict``), so that serving never
    changes the model.

    A learning engine runs the state's challengers too, each prequentially on the same events
    after the champion: ``learn`` returns their predictions. A challenger that raises on an
    event stops learning there (its ``error`` says why); the champion never notices."""

    def __init__(self, state: ModelState, *, learn: bool = True, max_classes: int = MAX_CLASSES) -> None:
        self.state = state
        self.learns = learn
        self._is_classifier = state.task != "regression"
        self._max_classes = 2 if state.task == "binary" else max_classes
        self._classes = set(state.classes)
        self.challengers = {name: Engine(c, max_classes=max_classes)
                            for name, c in state.challengers.items() if learn and not c.error}
        self.alerts: list[Alert] = []  # drift alerts not taken by the caller yet

    def check(self, event: Event) -> None:
        """Refuse what the model must not see: a third class for a binary model, or a class
        beyond ``max_classes`` for a multiclass one."""
        if self.learns and event.y is not None and self._is_classifier:
            self._check_class(event.y)

    def _check_class(self, y: Label) -> None:
        if y not in self._classes:
            admit_class(self.state.classes, y, self._max_classes)
            self._classes.add(y)

    def _predict(self, x: dict[str, Any]) -> tuple[Label | None, dict[Any, float] | None]:
        return predict_x(self.state.model, x, classifier=self._is_classifier)

    def predict(self, event: Event) -> Prediction:
        """What the model says of ``event``, as it is now; the model does not change (a frozen
        engine predicts on the features the model knows only)."""
        self.check(event)
        state = self.state
        x = state.features.admit(event.x) if self.learns else state.features.restrict(event.x)
        y_pred, proba = self._predict(x)
        return Prediction(event, y_pred, proba, state.learned, x)

    def learn(self, prediction: Prediction) -> tuple[Shadow, ...]:
        """Score the prediction and learn the event's label; an event without one waits for
        its late label (when a labels topic is configured). Then each challenger predicts and
        learns the event: their predictions. A frozen engine learns nothing."""
        if not self.learns:
            return ()
        state, event = self.state, prediction.event
        pending = state.pending
        y = event.y
        if y is None and pending is not None:
            y = pending.claim(event.id)  # its label came first
        if y is not None:
            if state.metrics.update(y, prediction.y_pred, prediction.proba) and state.drift is not None:
                self._watch(event.id, event.source, y, prediction.y_pred)
            self._learn(event.id, prediction.x, y)
            if pending is not None:
                self._expire(pending.advance(event.ts))
        elif pending is not None:
            ts = event.ts if event.ts is not None else pending.watermark
            waiting = Waiting(prediction.x, prediction.y_pred, prediction.proba, ts)
            self._expire(pending.add(event.id, waiting))
        return self._challenge(event) if self.challengers else ()

    def _challenge(self, event: Event) -> tuple[Shadow, ...]:
        shadows = []
        for name, challenger in list(self.challengers.items()):
            try:
                prediction = challenger.predict(event)
                challenger.learn(prediction)
            except InvalidEvent as exc:
                self._retire(name, exc)
                continue
            shadows.append((name, prediction))
        return tuple(shadows)

    def _retire(self, name: str, exc: InvalidEvent) -> None:
        """A challenger that raised may be half-updated: it learns no more, its state stays."""
        self.state.challengers[name].error = str(exc)
        del self.challengers[name]
        log.warning("challenger %s stopped learning: %s", name, exc)

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
            state = self.state
            if state.metrics.update(label.y, waiting.y_pred, waiting.proba) and state.drift is not None:
                self._watch(label.id, label.source, label.y, waiting.y_pred)
            self._learn(label.id, waiting.x, label.y)
        self._expire(pending.advance(label.ts))
        for name, challenger in list(self.challengers.items()):
            try:
                challenger.label(label)
            except InvalidEvent as exc:
                self._retire(name, exc)
        return waiting is not None

    def _watch(self, event_id: str, source: Source, y: Label, y_pred: Any) -> None:
        """Feed the drift detector; on drift, an alert (and, if so configured, a challenger)."""
        state = self.state
        assert state.drift is not None
        drift = state.drift.update(y, y_pred, event_id)
        if drift is None:
            return
        started = ""
        if state.drift.start_challenger:
            started = f"drift-{state.learned}"
            for name in [n for n, c in state.challengers.items() if c.started_by == "drift"]:
                del state.challengers[name]  # one at a time: the newest drift's
                self.challengers.pop(name, None)
            fresh = state.sibling(state.spec)
            fresh.started_by = "drift"
            state.challengers[started] = fresh
            self.challengers[started] = Engine(fresh, max_classes=self._max_classes)
        self.alerts.append(Alert(drift, source, state.learned, started))

    def _learn(self, event_id: str, x: dict[str, Any], y: Label) -> None:
        learn_x(self.state.model, x, y)
        self.state.learned += 1
        self.state.digest = (self.state.digest + id_hash(event_id)) & _MASK

    def _expire(self, closed: list[tuple[str, Waiting]]) -> None:
        """Expired or evicted events: dropped, or learned with the default label (unscored)."""
        if self.state.default_label is not None:
            for event_id, waiting in closed:
                self._learn(event_id, waiting.x, self.state.default_label)
