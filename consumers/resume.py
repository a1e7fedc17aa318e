"""Where a learner starts: the store's latest checkpoint (or a fresh model), configured with
this run's settings, and what an earlier run already sent after it."""

from __future__ import annotations

import json
import logging

from consumers.clients.base import Clients
from consumers.replay import positions, recover
from stream_learner.checkpoint import CheckpointMeta, open_record, read_offsets
from stream_learner.config import Settings
from stream_learner.engine import ModelState
from stream_learner.errors import ConfigError, InvalidEvent, NoCheckpoint
from stream_learner.events import Partition, check_label
from stream_learner.models import same_spec
from stream_learner.pending import PendingLabels
from stream_learner.state.base import ModelStore

log = logging.getLogger("stream_learner.learner")


def load_latest(settings: Settings, store: ModelStore, *,
                logged: bool = True) -> tuple[ModelState, CheckpointMeta]:
    """The store's latest checkpoint, or a fresh model; ``logged``: say which (at start, not at
    each rewind). ``ConfigError`` when the checkpoint's model spec is not ``--model-spec``."""
    s = settings
    level = logging.INFO if logged else logging.DEBUG
    try:
        ckpt = open_record(store.load(s.model), s.signing_keys(), s.allow_version_mismatch,
                           s.trusted_packages())
    except NoCheckpoint:
        log.log(level, "model %s: no checkpoint, starting fresh from %s", s.model, s.start_from)
        return ModelState.fresh(s.model_spec, s.task, s.rolling_window), CheckpointMeta(s.model, 0, {})
    if not same_spec(ckpt.state.spec, s.model_spec):
        raise ConfigError(
            f"--model-spec: model {s.model} was trained with {ckpt.state.spec!r}, not "
            f"{s.model_spec!r}. Start the new spec under a new --model name, or delete the "
            f"model's checkpoints: stream-learner models reset --model {s.model} --yes")
    log.log(level, "model %s: resumed v%d (%d learned) at %s", s.model, ckpt.meta.version,
            ckpt.state.learned, ckpt.meta.offsets)
    return ckpt.state, ckpt.meta


def configure(state: ModelState, settings: Settings) -> None:
    """Apply this run's bounds to a restored state: the feature budget, and pending events
    when a labels topic is configured."""
    state.features.max_features = settings.max_features
    if not settings.labels_topic:
        state.pending = None  # no late labels: nothing waits
        return
    if state.pending is None:
        state.pending = PendingLabels(settings.label_ttl, settings.max_pending)
    state.pending.ttl, state.pending.max_pending = settings.label_ttl, settings.max_pending
    state.pending.max_bytes = settings.max_pending_bytes
    state.default_label = None
    if settings.default_label:
        try:
            state.default_label = check_label(json.loads(settings.default_label), state.task)
        except (ValueError, InvalidEvent) as exc:
            raise ConfigError(f"--default-label: not a {state.task} label: {exc}") from None


def output_topics(settings: Settings) -> dict[str, str]:
    """The topics the learner writes to, with their flags."""
    return {settings.predictions_topic: "--predictions-topic",
            settings.dead_letters_to("learn"): "--dead-letter-topic"}


def output_positions(settings: Settings, clients: Clients) -> dict[Partition, int]:
    """Where each partition of the predictions and dead-letter topics ends now."""
    reader = clients.reader()
    try:
        return positions(reader, output_topics(settings))
    finally:
        reader.close()


def sent_after(settings: Settings, clients: Clients, meta: CheckpointMeta) -> set[tuple[str, int, int]]:
    """The predictions and dead letters an earlier run sent after the checkpoint ``meta``, so
    that a replay does not send them twice (``ReplayGuard.recovered``)."""
    reader = clients.reader()
    try:
        found = recover(reader, topics=output_topics(settings), start=read_offsets(meta.published),
                        model=settings.model, offsets=read_offsets(meta.offsets))
    finally:
        reader.close()
    if found:
        log.info("%d predictions and dead letters after v%d are sent already; a replay skips them",
                 len(found), meta.version)
    return found
