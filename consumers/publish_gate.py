"""The publish gate: frozen predictors are handed a new version only if it is no worse than the
one they serve.

With ``--publish-gate METRIC``, each checkpoint compares its rolling METRIC (over
``--rolling-window`` labelled events, as its header records it) with the served version's; it
is served if it is no worse by more than ``--publish-margin`` (relative: 0.01 lets a log loss
grow by 1%). A version that is not served is kept all the same, and the learner learns on:
only what predictors serve is held. The served version is kept whatever ``--keep-versions``.
"""

from __future__ import annotations

import logging

from stream_learner.checkpoint import read_meta
from stream_learner.config import Settings
from stream_learner.engine import ModelState
from stream_learner.errors import CheckpointError
from stream_learner.metrics import default_metrics
from stream_learner.state.base import ModelStore

log = logging.getLogger("stream_learner.learner")


class PublishGate:
    def __init__(self, settings: Settings, store: ModelStore, task: str) -> None:
        self.settings = settings
        self.store = store
        self.metric = settings.publish_gate
        self.name = f"{self.metric}@{settings.rolling_window}"
        self.bigger_is_better = next(m.bigger_is_better for m in default_metrics(task)
                                     if type(m).__name__ == self.metric)
        self.served: float | None = None
        self._known = False  # whether the served version's figure was read

    def passes(self, state: ModelState, version: int) -> bool:
        """Whether ``version``, holding ``state``, is to be served."""
        value = state.metrics.report().get(self.name)
        if not self._known:
            self.served, self._known = self._read_served(), True
        ok = self._no_worse(value)
        if ok:
            self.served = value
        else:
            log.info("publish gate: v%d's %s %s is worse than the served version's %s by more than "
                     "%g: predictors keep serving it", version, self.name, value, self.served,
                     self.settings.publish_margin)
        return ok

    def _no_worse(self, value: float | None) -> bool:
        served, margin = self.served, self.settings.publish_margin
        if served is None:
            return True
        if value is None:
            return False
        if self.bigger_is_better:
            return value >= served - margin * abs(served)
        return value <= served + margin * abs(served)

    def _read_served(self) -> float | None:
        """The served version's figure, from its header (None when there is none to compare)."""
        try:
            served = self.store.served(self.settings.model).version
            if not served:
                return None
            return read_meta(self.store.load(self.settings.model, served)).metrics.get(self.name)
        except CheckpointError as exc:
            log.warning("publish gate: cannot read the served version's %s (%s): the next version "
                        "is served", self.name, exc)
            return None
