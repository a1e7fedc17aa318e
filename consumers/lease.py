"""The writer lease: one learner per model, renewed by a thread of its own.

Renewal runs beside the learning loop, so that a Redis that stalls or goes away stalls no
prediction: the loop asks ``check()``, which costs nothing and raises ``FencedError`` once a
renewal found that another learner took the lease over. A renewal that cannot reach Redis is
logged once, then summed up every ``SUMMARY_S`` seconds, and retried every third of the TTL.

>>> from stream_learner.state.memory import MemoryStore
>>> store = MemoryStore()
>>> with WriterLease(store, "m", ttl=5.0, owner="a") as lease:
...     lease.wait_for(threading.Event()), lease.token
(True, 1)
>>> store.acquire("m", ttl=5.0, owner="b")  # released on leaving: a standby takes over at once
2
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType

from stream_learner.errors import StoreUnavailable, StreamLearnerError
from stream_learner.state.base import ModelStore

log = logging.getLogger("stream_learner.learner")

SUMMARY_S = 30.0


class WriterLease:
    def __init__(self, store: ModelStore, model: str, *, ttl: float, owner: str) -> None:
        self.store = store
        self.model = model
        self.ttl = ttl
        self.owner = owner
        self.token = 0
        self.lost: StreamLearnerError | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def wait_for(self, stop: threading.Event, beat: Callable[[], None] = lambda: None) -> bool:
        """Wait (as a standby) until this process holds the lease; False if stopped first;
        ``beat`` at each try. Then a thread renews it until the ``with`` block ends."""
        announced = False
        while not stop.is_set():
            beat()
            token = self.store.acquire(self.model, self.ttl, self.owner)
            if token is not None:
                self.token = token
                log.info("model %s: took the writer lease (fencing token %d)", self.model, token)
                self._thread = threading.Thread(target=self._renew, name="lease-renewal", daemon=True)
                self._thread.start()
                return True
            if not announced:
                log.info("model %s: standby, another learner holds the writer lease", self.model)
                announced = True
            stop.wait(min(1.0, self.ttl / 4))
        return False

    def check(self) -> None:
        """``FencedError`` (or the store's refusal) once a renewal has found the lease lost."""
        if self.lost is not None:
            raise self.lost

    def __enter__(self) -> WriterLease:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is None:
            return
        self._thread.join()
        if self.lost is None:
            try:
                self.store.release(self.model, self.token, self.owner)
            except StreamLearnerError as exc:
                log.warning("could not release the writer lease (it will expire): %s", exc)

    def _renew(self) -> None:
        failing_since: float | None = None
        reported = 0.0
        while not self._stop.wait(self.ttl / 3):
            try:
                self.store.renew(self.model, self.token, self.ttl, self.owner)
            except StoreUnavailable as exc:
                now = time.monotonic()
                if failing_since is None:
                    failing_since = reported = now
                    log.warning("cannot renew the writer lease, learning goes on: %s", exc)
                elif now - reported >= SUMMARY_S:
                    reported = now
                    log.warning("the writer lease has not been renewed for %.0f s: %s",
                                now - failing_since, exc)
                continue
            except StreamLearnerError as exc:  # fenced, or a lease key written by hand
                self.lost = exc
                log.error("model %s: the writer lease is lost: %s", self.model, exc)
                return
            except Exception as exc:  # a bug of ours: stop learning rather than write unleased
                self.lost = StreamLearnerError(f"renewing the writer lease failed: "
                                               f"{type(exc).__name__}: {exc}")
                log.exception("model %s: renewing the writer lease failed", self.model)
                return
            if failing_since is not None:
                log.info("the writer lease is renewed again after %.0f s", time.monotonic() - failing_since)
                failing_since = None
