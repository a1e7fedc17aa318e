"""Where a learner starts: the store's latest checkpoint (or a fresh model), configured with
this run's settings, and what an earlier run already sent after it."""

from __future__ import annotations

import json
import logging

from consumers.clients.base import Clients
from consumers.replay import Shadow, positions, recover
from stream_learner.checkpoint import CheckpointMeta, open_record, read_offsets
from stream_learner.config import Settings
from stream_learner.drift import DriftWatch
from stream_learner.engine import ModelState
from stream_learner.errors import ConfigError, InvalidEvent, NoCheckpoint
from stream_learner.events import Partition, check_label
from stream_learner.models import same_spec
from stream_learner.pending import PendingLabels
from stream_learner.promotion import origin_spec, promoted_names
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
    origin = origin_spec(ckpt.state)
    if not same_spec(ckpt.state.spec, s.model_spec) and not same_spec(origin, s.model_spec):
        raise ConfigError(
            f"--model-spec: model {s.model} was trained with {origin!r}, not "
            f"{s.model_spec!r}. Start the new spec under a new --model name, or delete the "
            f"model's checkpoints: stream-learner models reset --model {s.model} --yes")
    log.log(level, "model %s: resumed v%d (%d learned) at %s", s.model, ckpt.meta.version,
            ckpt.state.learned, ckpt.meta.offsets)
    if not same_spec(ckpt.state.spec, s.model_spec):
        log.log(level, "model %s: its champion is %r, promoted from a challenger; --model-spec "
                "builds a fresh model only (models history)", s.model, ckpt.state.spec)
    return ckpt.state, ckpt.meta


def configure(state: ModelState, settings: Settings) -> None:
    """Apply this run's settings to a restored state: its challengers, the feature budget, and
    pending events when a labels topic is configured."""
    _challengers(state, settings)
    for one in (state, *state.challengers.values()):
        _bounds(one, settings)
    _drift(state, settings)


def _drift(state: ModelState, settings: Settings) -> None:
    """The champion's detector of ``--drift-detector``: resumed when it is the same, else fresh."""
    spec, start = settings.drift_detector, settings.on_drift == "start-challenger"
    if not spec:
        state.drift = None
        return
    if state.drift is None or not same_spec(state.drift.spec, spec):
        state.drift = DriftWatch(spec, state.task)
    state.drift.start_challenger = start


def _challengers(state: ModelState, settings: Settings) -> None:
    """The challengers of ``--challenger``: a new one starts fresh from here, one no longer
    given is dropped, and one given with another spec than it learned with is refused."""
    wanted = settings.challenger_specs()
    keep = settings.drift_detector and settings.on_drift == "start-challenger"
    for name in [n for n, c in state.challengers.items()
                 if n not in wanted and not (keep and c.started_by == "drift")]:
        log.info("challenger %s is no longer configured: dropped", name)
        del state.challengers[name]
    promoted = promoted_names(state)
    for name, spec in wanted.items():
        have = state.challengers.get(name)
        if have is None and name in promoted:
            log.info("challenger %s was promoted to champion: not started again under that name", name)
        elif have is None:
            state.challengers[name] = ModelState.fresh(spec, state.task, state.metrics.window)
        elif not same_spec(have.spec, spec):
            raise ConfigError(f"--challenger {name}: it learned with {have.spec!r}, not {spec!r}; give "
                              "the new spec another name")


def _bounds(state: ModelState, settings: Settings) -> None:
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
    shadow = {settings.shadow_topic: "--shadow-topic"} if settings.shadow_topic else {}
    return {settings.predictions_topic: "--predictions-topic",
            settings.dead_letters_to("learn"): "--dead-letter-topic", **shadow}


def output_positions(settings: Settings, clients: Clients) -> dict[Partition, int]:
    """Where each partition of the topics the learner writes to ends now."""
    reader = clients.reader()
    try:
        return positions(reader, output_topics(settings))
    finally:
        reader.close()


def sent_after(settings: Settings, clients: Clients, meta: CheckpointMeta) -> set[Shadow]:
    """The predictions (the shadow ones too) and dead letters an earlier run sent after the
    checkpoint ``meta``, so that a replay does not send them twice (``ReplayGuard.recover``)."""
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
