"""``POST /predict``: a frozen predictor's answer over HTTP, in the same contracts as Kafka.

The body is one event, or a JSON array of up to ``MAX_EVENTS`` events, in the event contract;
the answer is its prediction (or the array of them) in the prediction contract, made by the
model the predictor serves at that moment. An event is validated as it is on the events topic,
and an invalid one gets 400 with the dead-letter topic's reason code. An event without an id is
named ``http/0/<n>``, as one from Kafka is named by its topic, partition and offset.

>>> from stream_learner.engine import Engine, ModelState
>>> from stream_learner.events import FieldNames, Limits
>>> state = ModelState.fresh("linear_model.LogisticRegression()", "binary")
>>> frozen = FrozenModel(Engine(state, learn=False), 3)
>>> answer = HttpPredict("fraud", FieldNames(), Limits(), lambda: frozen)
>>> answer(b'{"id": "a", "x": {"n": 1}}')[:1]
(200,)
>>> answer(b'{"id": "a", "x": {"n": NaN}}')
(400, b'{"reason":"non_finite","error":"NaN is not a finite number","index":0}')
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import NamedTuple, Protocol

import orjson

from stream_learner.engine import Engine
from stream_learner.errors import InvalidEvent, StoreUnavailable
from stream_learner.events import (
    Event,
    FieldNames,
    Limits,
    Prediction,
    Source,
    decode_event,
    encode_prediction,
    event_from_doc,
    json_kind,
    strict_loads,
)

MAX_EVENTS = 1000  # a request's events


class Answers(Protocol):
    """What answers a request: the task of its models, and each event's prediction with the
    version of the model that made it."""

    @property
    def task(self) -> str: ...

    def predict(self, event: Event) -> tuple[Prediction, int]: ...


class FrozenModel(NamedTuple):
    """One model at one version (global scope): swapped whole, never seen half-loaded."""

    engine: Engine
    version: int

    @property
    def task(self) -> str:
        return self.engine.state.task

    def predict(self, event: Event) -> tuple[Prediction, int]:
        return self.engine.predict(event), self.version


Serving = Callable[[], Answers | None]  # what answers now, if anything does


class HttpPredict:
    """Answers a ``POST /predict`` body: (status, JSON body)."""

    def __init__(self, model: str, fields: FieldNames, limits: Limits, serving: Serving, *,
                 counted: Callable[[int], None] | None = None) -> None:
        self.model = model
        self.counted = counted  # told how many events each answered request predicted
        self.fields = fields
        self.limits = limits
        self.serving = serving
        self.max_body = limits.max_bytes * MAX_EVENTS
        self._numbers = itertools.count()

    def __call__(self, body: bytes) -> tuple[int, bytes]:
        served = self.serving()  # one model for the whole request, however reloads go
        if served is None:
            return 503, _error("not_ready", "no model is loaded yet")
        index = 0
        try:
            if len(body) > self.max_body:
                raise InvalidEvent("too_large", f"{len(body)} bytes > limit of {self.max_body}")
            if body.lstrip()[:1] != b"[":
                event = decode_event(body, self._source(), self.fields, served.task, self.limits)
                answer = self._one(served, event)
                self._count(1)
                return 200, answer
            docs = strict_loads(body)
            if len(docs) > MAX_EVENTS:
                raise InvalidEvent("too_large", f"{len(docs)} events > limit of {MAX_EVENTS}")
            answers = []
            for index, doc in enumerate(docs):  # noqa: B007 (the error names it)
                if not isinstance(doc, dict):
                    raise InvalidEvent("not_object", f"the event is {json_kind(doc)}, not an object")
                if len(orjson.dumps(doc)) > self.limits.max_bytes:
                    raise InvalidEvent("too_large", f"the event is over the limit of {self.limits.max_bytes} "
                                       "bytes")
                event = event_from_doc(doc, self._source(), self.fields, served.task, self.limits)
                answers.append(self._one(served, event))
        except InvalidEvent as exc:
            return 400, _error(exc.reason, exc.detail, index)
        except (TypeError, ValueError) as exc:  # orjson cannot write it back (an integer beyond 64 bits)
            return 400, _error("bad_field", str(exc), index)
        except StoreUnavailable as exc:  # key scope: a key's model is read from the store
            return 503, _error("store_unavailable", str(exc), index)
        self._count(len(answers))
        return 200, b"[" + b",".join(answers) + b"]"

    def _count(self, n: int) -> None:
        if self.counted is not None:
            self.counted(n)

    def _source(self) -> Source:
        return Source("http", 0, next(self._numbers), int(time.time() * 1000))

    def _one(self, served: Answers, event: Event) -> bytes:
        prediction, version = served.predict(event)
        try:
            return encode_prediction(prediction, model=self.model, version=version, mode="frozen")
        except (TypeError, ValueError) as exc:
            raise InvalidEvent("model_error", f"the prediction cannot be encoded: {exc}") from exc


def _error(reason: str, message: str, index: int = 0) -> bytes:
    return orjson.dumps({"reason": reason, "error": message, "index": index})
