"""One record, from its bytes to its answer: the same step for the learner and a predictor.

decode -> predict -> encode -> learn. The prediction is encoded before the model learns, so
that a prediction that cannot be sent is refused (``model_error``) with the model unchanged.
Whatever else goes wrong with one record is that record's ``InvalidEvent`` (``internal_error``
when unforeseen): the record is dead-lettered, never the process stopped.
"""

from __future__ import annotations

from stream_learner.config import Settings
from stream_learner.engine import Engine, Shadow
from stream_learner.errors import InvalidEvent
from stream_learner.events import Source, decode_event, decode_label, encode_prediction

# A prediction as it goes to the predictions topic: its key (the event's key, or its id), its
# value, and the challengers' predictions for the shadow topic ((variant, value), with the same
# key). A plain tuple: one is made per event.
Answer = tuple[str, bytes, tuple[tuple[str, bytes], ...]]


class RecordStep:
    """The per-record step of ``mode`` (learn or frozen) for one model."""

    def __init__(self, settings: Settings, mode: str) -> None:
        self.model = settings.model
        self.mode = mode
        self.fields = settings.event_fields()
        self.limits = settings.event_limits()
        self.labels_topic = settings.labels_topic if mode == "learn" else ""
        self.shadows = bool(settings.shadow_topic) and mode == "learn"

    def __call__(self, engine: Engine, raw: bytes | None, source: Source, version: int) -> Answer | None:
        """The answer to one record, or None for a late label; ``version``: the model's."""
        try:
            if self.labels_topic and source.topic == self.labels_topic:
                engine.label(decode_label(raw, source, self.fields, engine.state.task, self.limits))
                return None
            prediction = engine.predict(decode_event(raw, source, self.fields, engine.state.task,
                                                     self.limits))
            try:
                value = encode_prediction(prediction, model=self.model, version=version, mode=self.mode)
            except (TypeError, ValueError) as exc:  # orjson's JSONEncodeError is a TypeError
                raise InvalidEvent("model_error", f"the prediction cannot be encoded: {exc}") from exc
            shadows = engine.learn(prediction)
            event = prediction.event
            return event.key or event.id, value, self._shadows(shadows, version) if shadows else ()
        except InvalidEvent:
            raise
        except Exception as exc:
            raise InvalidEvent("internal_error", f"{type(exc).__name__}: {exc}") from exc

    def _shadows(self, shadows: tuple[Shadow, ...], version: int) -> tuple[tuple[str, bytes], ...]:
        """The challengers' predictions, encoded for the shadow topic; one that cannot be encoded
        is left out (the champion's prediction is what the event is answered with)."""
        if not self.shadows:
            return ()
        out = []
        for name, prediction in shadows:
            try:
                out.append((name, encode_prediction(prediction, model=self.model, version=version,
                                                    mode=self.mode, variant=name)))
            except (TypeError, ValueError):
                continue
        return tuple(out)
