"""Hot reload for frozen predictors: new checkpoint versions, found and opened off the loop.

A thread asks the store which version to serve every ``POLL_S`` seconds: the served version,
which is the latest unless an operator, a rollback or the publish gate holds another. Another
one than the predictor serves is loaded, verified and unpickled in that thread, and the loop
takes the opened checkpoint between two batches. So neither a Redis that stalls nor the
unpickling of a large forest holds up a prediction. A version that is refused (a bad
signature, a record moved from another slot) is logged once and never asked for again; the
predictor serves on.
"""

from __future__ import annotations

import logging
import threading
import time

from stream_learner.checkpoint import Checkpoint, open_record
from stream_learner.config import Settings
from stream_learner.errors import CheckpointError, NoCheckpoint, StoreUnavailable
from stream_learner.state.base import ModelStore

log = logging.getLogger("stream_learner.predictor")

POLL_S = 0.1
SUMMARY_S = 30.0


class Reloader:
    def __init__(self, store: ModelStore, settings: Settings, serving: int) -> None:
        self.store = store
        self.settings = settings
        self.seen = serving  # the version served, or being handed to the loop
        self.refused: set[int] = set()
        self._ready: Checkpoint | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="hot-reload", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def take(self) -> Checkpoint | None:
        """The newest opened checkpoint not taken yet, or None."""
        if self._ready is None:
            return None
        with self._lock:
            ready, self._ready = self._ready, None
        return ready

    def _watch(self) -> None:
        """Until stopped, whatever the store holds: an error is logged (once, then every
        ``SUMMARY_S`` seconds while it lasts) and the predictor serves on."""
        failing_since: float | None = None
        reported = 0.0
        while not self._stop.wait(POLL_S):
            try:
                self._check()
            except Exception as exc:  # StoreUnavailable, a damaged key, or a bug: never the end
                now = time.monotonic()
                if failing_since is None:
                    failing_since = reported = now
                    log.warning("cannot check the store for a new version, still serving v%d: %s: %s",
                                self.seen, type(exc).__name__, exc)
                elif now - reported >= SUMMARY_S:
                    reported = now
                    log.warning("the store has failed for %.0f s, still serving v%d: %s",
                                now - failing_since, self.seen, exc)
                continue
            if failing_since is not None:
                log.info("the store answers again after %.0f s", time.monotonic() - failing_since)
                failing_since = None

    def _check(self) -> None:
        s = self.settings
        target = self.store.served(s.model).version
        if not target or target == self.seen or target in self.refused:
            return
        try:
            ckpt = open_record(self.store.load(s.model, target), s.signing_keys(),
                               s.allow_version_mismatch, s.trusted_packages())
        except (StoreUnavailable, NoCheckpoint):
            raise  # tried again at the next check
        except CheckpointError as exc:
            self.refused.add(target)
            log.error("refusing v%d, still serving v%d: %s", target, self.seen, exc)
            return
        with self._lock:
            self._ready = ckpt
        self.seen = target
