"""The prequential step: predict, then learn from the label if the event has one.

Pure and in-memory: no Kafka, no Redis. The caller feeds decoded events and sends the
returned prediction bytes wherever it likes.

>>> from stream_learner.events import Event, Source
>>> state = ModelState.fresh("preprocessing.StandardScaler() | linear_model.LogisticRegression()")
>>> engine = Engine(state, model_name="fraud", mode="learn")
>>> e = Event("e-1", None, None, {"amount": 3.0}, True, Source("events", 0, 0))
>>> import json
>>> first = json.loads(engine.process(e))
>>> first["prediction"], first["proba"], first["learned"]
(False, {'false': 0.5, 'true': 0.5}, 0)
>>> state.learned, json.loads(engine.process(e))["learned"]
(1, 1)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from river import base

from stream_learner.errors import InvalidEvent
from stream_learner.events import Event, Label, encode_prediction
from stream_learner.metrics import PrequentialMetrics
from stream_learner.models import build_model, infer_task

_MASK = 2**64 - 1


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

    @classmethod
    def fresh(cls, spec: str, task: str = "auto", window: int = 1000) -> ModelState:
        model = build_model(spec)
        task = infer_task(model, task)
        return cls(model, spec, task, PrequentialMetrics(task, window))


class Engine:
    """Runs events through one ``ModelState``; ``learn=False`` serves it frozen."""

    def __init__(self, state: ModelState, *, model_name: str, mode: str, version: int = 0,
                 learn: bool = True) -> None:
        self.state = state
        self.model_name = model_name
        self.mode = mode
        self.version = version
        self.learn = learn
        self._is_classifier = state.task != "regression"

    def check(self, event: Event) -> None:
        """Refuse what the model must not see: a third class for a binary model."""
        y = event.y
        if (self.learn and y is not None and self.state.task == "binary"
                and y not in self.state.classes):
            if len(self.state.classes) >= 2:
                raise InvalidEvent("new_class", f"label {y!r} is not one of {self.state.classes}")
            self.state.classes.append(y)

    def predict(self, x: dict[str, Any]) -> tuple[Label | None, dict[Any, float] | None]:
        model: Any = self.state.model
        if self._is_classifier:
            proba: dict[Any, float] = model.predict_proba_one(x)
            # The argmax, as River's Classifier.predict_one takes it (first maximum wins).
            return (max(proba, key=proba.__getitem__) if proba else None), proba
        return model.predict_one(x), None

    def process(self, event: Event) -> bytes:
        """Predict, update the metrics and learn; return the encoded prediction."""
        self.check(event)
        learned = self.state.learned  # the exact model state that makes this prediction
        try:
            y_pred, proba = self.predict(event.x)
        except Exception as exc:
            raise InvalidEvent("model_error", f"predict failed: {type(exc).__name__}: {exc}") from exc
        if self.learn and event.y is not None:
            self.state.metrics.update(event.y, y_pred, proba)
            try:
                self.state.model.learn_one(event.x, event.y)
            except Exception as exc:
                raise InvalidEvent("model_error", f"learn failed: {type(exc).__name__}: {exc}") from exc
            self.state.learned += 1
            self.state.digest = (self.state.digest + id_hash(event.id)) & _MASK
        return encode_prediction(event, y_pred, proba, self.model_name, self.version, self.mode,
                                 learned)
