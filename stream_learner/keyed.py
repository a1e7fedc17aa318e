"""Key scope (``--model-scope key``): a model per event key, owned by the partition its events
are in. Pure and in-memory: no Kafka, no Redis.

A partition's ``PartitionState`` holds what is shared by its keys: the prequential metrics over
all of them, the counts, the clock (the largest record timestamp seen), and with
``--key-prior global`` the prior, a model learning from every event of the partition, which
each new key starts from. Each key's ``KeyModel`` holds its model alone. ``KeyedEngine`` runs
one event through the key's model: predict, score, learn, as ``Engine`` does for one model.

>>> engine = KeyedEngine("linear_model.LogisticRegression()")
>>> part = engine.fresh_partition()
>>> from stream_learner.events import Event, Source
>>> e = Event("e-1", "alice", None, {"amount": 3.0}, True, Source("events", 0, 0, 1000))
>>> alice = engine.model_for(part, None, e)
>>> engine.process(part, alice, e).proba
{False: 0.5, True: 0.5}
>>> alice.learned, part.learned, part.keys_created
(1, 1, 1)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from river import base

from stream_learner.budget import MAX_FEATURES, FeatureBudget
from stream_learner.engine import MAX_CLASSES, admit_class, id_hash, learn_x, predict_x
from stream_learner.errors import InvalidEvent
from stream_learner.events import Event, Label, Prediction
from stream_learner.metrics import PrequentialMetrics
from stream_learner.models import build_model, infer_task

_MASK = 2**64 - 1
PRIORS = ("none", "global")


@dataclass
class KeyModel:
    """One key's model and what the checks need of it."""

    model: base.Estimator
    learned: int = 0
    digest: int = 0  # sum of id_hash() of its learned event ids, mod 2**64
    classes: list[Label] = field(default_factory=list)
    features: FeatureBudget = field(default_factory=FeatureBudget)
    last_ts: int = 0  # the record timestamp (ms) of its latest event
    metrics: PrequentialMetrics | None = None  # a watched key's own (--key-metric)


@dataclass
class PartitionState:
    """What a partition's checkpoint holds besides its key models and its offset."""

    spec: str
    task: str
    metrics: PrequentialMetrics
    prior: KeyModel | None = None  # --key-prior global: learns from every event here
    events: int = 0  # records handled, dead-lettered ones included
    learned: int = 0
    digest: int = 0  # the sum of its keys' digests, mod 2**64
    keys_created: int = 0  # key models started (first sight, or after expiring)
    keys_expired: int = 0  # key models found idle past --key-ttl
    clock: int = 0  # the largest record timestamp (ms) seen here


class KeyedEngine:
    """Runs events through key models of one spec; ``learn=False`` serves them frozen."""

    def __init__(self, spec: str, task: str = "auto", *, prior: str = "none", ttl_ms: int = 0,
                 window: int = 1000, max_classes: int = MAX_CLASSES, max_features: int = MAX_FEATURES,
                 learn: bool = True, watched: frozenset[str] = frozenset()) -> None:
        self.spec = spec
        self._template = build_model(spec)  # copied for each new key: cheaper than building it
        self.task = infer_task(self._template, task)
        self.prior = prior
        self.ttl_ms = ttl_ms
        self.window = window
        self.max_features = max_features
        self.learns = learn
        self.watched = watched  # keys whose own metrics are kept
        # This process's own counts (a partition's, in its state, move with the partition).
        self.learned = self.keys_created = self.keys_expired = 0
        self._classifier = self.task != "regression"
        self._max_classes = 2 if self.task == "binary" else max_classes

    def fresh_partition(self) -> PartitionState:
        prior = self.fresh_model() if self.prior == "global" else None
        return PartitionState(self.spec, self.task, PrequentialMetrics(self.task, self.window), prior)

    def fresh_model(self) -> KeyModel:
        return KeyModel(copy.deepcopy(self._template), features=FeatureBudget(self.max_features))

    def expired(self, found: KeyModel, ts: int) -> bool:
        """Whether ``found`` has been idle past the ttl at record time ``ts``."""
        return bool(self.ttl_ms) and ts - found.last_ts > self.ttl_ms

    def model_for(self, part: PartitionState, found: KeyModel | None, event: Event) -> KeyModel:
        """The model ``event`` goes to: ``found`` (the key's, from the cache or the store),
        unless it is missing or expired; then a fresh one, or a copy of the partition's prior.
        A watched key's model keeps metrics of its own from then on."""
        model = found
        if model is None or self.expired(model, event.source.timestamp_ms or 0):
            if model is not None:
                part.keys_expired += 1
                self.keys_expired += 1
            part.keys_created += 1
            self.keys_created += 1
            model = self.started(part)
        if model.metrics is None and event.key in self.watched:
            model.metrics = PrequentialMetrics(self.task, self.window)
        return model

    def started(self, part: PartitionState) -> KeyModel:
        """A new key's model: fresh, or a copy of the partition's prior."""
        if part.prior is None:
            return self.fresh_model()
        started = copy.deepcopy(part.prior)
        started.learned = started.digest = 0
        return started

    def check(self, key_model: KeyModel, event: Event) -> None:
        """Refuse a class the key's model must not see."""
        y = event.y
        if self.learns and y is not None and self._classifier and y not in key_model.classes:
            admit_class(key_model.classes, y, self._max_classes)

    def predict(self, key_model: KeyModel, event: Event) -> Prediction:
        """What the key's model says of ``event``; the model does not change."""
        self.check(key_model, event)
        budget = key_model.features
        x = budget.admit(event.x) if self.learns else budget.restrict(event.x)
        y_pred, proba = predict_x(key_model.model, x, classifier=self._classifier)
        return Prediction(event, y_pred, proba, key_model.learned, x)

    def learn(self, part: PartitionState, key_model: KeyModel, prediction: Prediction) -> None:
        """Count the event, score the prediction and learn the label (the prior too)."""
        event = prediction.event
        ts = event.source.timestamp_ms or 0
        part.events += 1
        part.clock = max(part.clock, ts)
        key_model.last_ts = max(key_model.last_ts, ts)
        y = event.y
        if not self.learns or y is None:
            return
        learn_x(key_model.model, prediction.x, y)
        if part.prior is not None:
            learn_x(part.prior.model, part.prior.features.admit(event.x), y)
            part.prior.learned += 1
        part.metrics.update(y, prediction.y_pred, prediction.proba)
        if key_model.metrics is not None:
            key_model.metrics.update(y, prediction.y_pred, prediction.proba)
        h = id_hash(event.id)
        key_model.learned += 1
        key_model.digest = (key_model.digest + h) & _MASK
        part.learned += 1
        part.digest = (part.digest + h) & _MASK
        self.learned += 1

    def process(self, part: PartitionState, key_model: KeyModel, event: Event) -> Prediction:
        """``predict``, then ``learn``: the prequential step, for use in-process."""
        prediction = self.predict(key_model, event)
        self.learn(part, key_model, prediction)
        return prediction


def key_of(event: Event) -> str:
    """The event's key, whose model it goes to; ``missing_key`` without one."""
    if event.key is None:
        raise InvalidEvent("missing_key", "under --model-scope key every event needs a key")
    return event.key


def expiry_cutoff(part: PartitionState, ttl_ms: int) -> int:
    """Keys whose latest event is older than this record time are idle past the ttl (0: none)."""
    return max(0, part.clock - ttl_ms) if ttl_ms else 0


def described(part: PartitionState) -> dict[str, Any]:
    """The partition's figures, for its checkpoint's header and the logs."""
    return {"events": part.events, "learned": part.learned, "keys_created": part.keys_created,
            "keys_expired": part.keys_expired, "clock": part.clock}
