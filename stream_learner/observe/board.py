"""What a running loop shows the world: its counters, figures, health and history.

The loop's thread writes to a ``Board`` once per batch (``batch``) and, at most every
``REFRESH_S`` seconds, the figures that cost more to read (``refresh``: the prequential
metrics, the lag per partition). The HTTP server's threads read it (``snapshot``, ``history``)
under the same lock, so a reader sees one batch's figures whole and never holds the loop up
for longer than a copy of a few small dicts.

>>> board = Board("fraud", "learn", wall=lambda: 100.0)
>>> board.batch(events=10, predicted=8, learned=8, dead_letters={"bad_json": 2}, version=3)
>>> board.batch(events=4, predicted=4, learned=4, dead_letters={}, version=3)  # a rewind
>>> board.batch(events=6, predicted=6, learned=6, dead_letters={}, version=3)
>>> snap = board.snapshot()
>>> snap.outcomes["predicted"], snap.dead_letters, snap.version
(10, {'bad_json': 2}, 3)
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

REFRESH_S = 1.0  # the dashboard's and the lag's resolution
HISTORY = 3600  # points kept for the dashboard: an hour at one a second
VERSIONS = 1000  # model version changes kept for the dashboard
MARKS = 200  # promotions, rollbacks and drift alerts kept for the dashboard's timeline
HEALTH_DEADLINE_S = 60.0  # a loop that has not come round for this long is stuck
PAUSE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
OUTCOMES = ("predicted", "learned", "dead_lettered")


class Tally:
    """Monotonic counters from totals that can go back (a learner's totals go back to its
    rewind point or checkpoint, and go on from there): each rise counts, a fall re-bases.

    >>> t = Tally()
    >>> t.update({"a": 5}); t.update({"a": 2}); t.update({"a": 3})
    >>> t.counted
    {'a': 6}
    """

    def __init__(self) -> None:
        self.last: dict[str, int] = {}
        self.counted: dict[str, int] = {}

    def update(self, totals: Mapping[str, int]) -> None:
        last, counted = self.last, self.counted
        for name, total in totals.items():
            rise = total - last.get(name, 0)
            if rise > 0:
                counted[name] = counted.get(name, 0) + rise
            elif name not in counted:
                counted[name] = 0
            last[name] = total


@dataclass(frozen=True)
class Snapshot:
    """A loop's figures at one moment, as the HTTP server shows them."""

    model: str
    mode: str
    instance: str
    version: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    dead_letters: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, float | None] = field(default_factory=dict)
    lags: dict[tuple[str, int], int] = field(default_factory=dict)
    pending_labels: int | None = None
    lease_held: bool | None = None  # None: this mode holds no lease
    assigned: int = 0  # partitions
    model_loaded: bool = False
    events_per_s: float = 0.0
    last_checkpoint_at: float | None = None  # wall clock
    last_checkpoint_bytes: int | None = None
    reloads: int = 0
    drifts: int = 0  # drift alerts raised by this process
    spec: str = ""  # the champion's (a learner's)
    learned_total: int = 0  # the champion's learned events, over its life
    # name -> {spec, learned, metrics, error}: the challengers beside the champion
    challengers: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Key scope: the key models' figures (cached, dirty, created, expired, evicted, hits, misses),
    # and per partition owned or served: {version, metrics}.
    keys: dict[str, int] = field(default_factory=dict)
    partitions: dict[int, dict[str, Any]] = field(default_factory=dict)
    key_metrics: dict[str, dict[str, float | None]] = field(default_factory=dict)  # --key-metric's
    pauses: tuple[int, ...] = (0,) * (len(PAUSE_BUCKETS) + 1)  # checkpoint pauses per bucket, +Inf last
    pauses_sum: float = 0.0
    started_at: float = 0.0
    beat_age_s: float = 0.0  # since the loop last came round

    @property
    def healthy(self) -> bool:
        return self.beat_age_s < HEALTH_DEADLINE_S

    @property
    def ready(self) -> bool:
        """A model is loaded, partitions are assigned, and (a learner) the lease is held."""
        return self.model_loaded and self.assigned > 0 and self.lease_held is not False


@dataclass(frozen=True)
class Point:
    """One point of the dashboard's history."""

    at: float
    events_per_s: float
    version: int
    lag: int | None
    metrics: dict[str, float | None]
    challengers: dict[str, dict[str, float | None]] = field(default_factory=dict)  # their metrics


@dataclass(frozen=True)
class Mark:
    """Something that happened to the model, for the dashboard's timeline."""

    at: float
    kind: str  # promotion, rollback, drift
    text: str


class Board:
    """One loop's figures. Written by the loop's thread, read by any."""

    def __init__(self, model: str, mode: str, *, instance: str = "",
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.clock, self.wall = clock, wall
        self._lock = threading.Lock()
        self._snap = Snapshot(model, mode, instance, started_at=wall())
        self._outcomes, self._letters = Tally(), Tally()
        self._beat = clock()
        self._next_refresh = self._beat
        self._rate_at, self._rate_events = self._beat, 0
        self._handled = 0  # events handled by this process, as the rate counts them
        self._last_events: int | None = None
        self._history: deque[Point] = deque(maxlen=HISTORY)
        self._versions: deque[tuple[float, int]] = deque(maxlen=VERSIONS)
        self._marks: deque[Mark] = deque(maxlen=MARKS)

    # -- the loop's side -------------------------------------------------------------------

    def beat(self) -> None:
        """The loop came round (with records or without)."""
        self._beat = self.clock()

    def batch(self, *, events: int, predicted: int, learned: int, dead_letters: Mapping[str, int],
              version: int) -> None:
        """The loop's totals after a batch (they may go back, after a rewind)."""
        self._beat = self.clock()
        last = self._last_events
        if last is not None and events > last:
            self._handled += events - last
        self._last_events = events
        with self._lock:
            self._outcomes.update({"predicted": predicted, "learned": learned,
                                   "dead_lettered": sum(dead_letters.values())})
            self._letters.update(dead_letters)
            self._set_version(version)
            self._snap = replace(self._snap, outcomes=dict(self._outcomes.counted),
                                 dead_letters=dict(self._letters.counted))

    def due(self) -> bool:
        """Whether the figures that cost more to read are due (``refresh``)."""
        return self.clock() >= self._next_refresh

    def refresh(self, *, metrics: Mapping[str, float | None], lags: Mapping[tuple[str, int], int | None],
                pending_labels: int | None = None,
                challengers: Mapping[str, dict[str, Any]] | None = None) -> None:
        now = self.clock()
        self._next_refresh = now + REFRESH_S
        rate = (self._handled - self._rate_events) / (now - self._rate_at) if now > self._rate_at else 0.0
        self._rate_at, self._rate_events = now, self._handled
        known = {tp: n for tp, n in lags.items() if n is not None}
        with self._lock:
            self._snap = replace(self._snap, metrics=dict(metrics), lags=known, events_per_s=rate,
                                 pending_labels=pending_labels, assigned=len(lags),
                                 challengers=dict(challengers or {}))
            total = sum(known.values()) if len(known) == len(lags) else None
            theirs = {name: c["metrics"] for name, c in (challengers or {}).items()}
            self._history.append(Point(self.wall(), rate, self._snap.version, total, dict(metrics), theirs))

    def mark(self, kind: str, text: str) -> None:
        """Something happened to the model (a promotion, a rollback, a drift alert)."""
        with self._lock:
            self._marks.append(Mark(self.wall(), kind, text))

    def set(self, **figures: Any) -> None:
        """Set ``Snapshot`` fields: ``model_loaded``, ``lease_held``, ``assigned``, ``reloads``."""
        with self._lock:
            self._snap = replace(self._snap, **figures)

    def loaded(self, version: int) -> None:
        """A model (``version``) is loaded and served or learned."""
        with self._lock:
            self._set_version(version)
            self._snap = replace(self._snap, model_loaded=True)

    def checkpointed(self, *, version: int, nbytes: int, pause_s: float) -> None:
        """A checkpoint is written; it held the loop up for ``pause_s`` seconds."""
        bucket = next((i for i, le in enumerate(PAUSE_BUCKETS) if pause_s <= le), len(PAUSE_BUCKETS))
        with self._lock:
            self._set_version(version)
            snap = self._snap
            pauses = tuple(n + (i == bucket) for i, n in enumerate(snap.pauses))
            self._snap = replace(snap, last_checkpoint_at=self.wall(), last_checkpoint_bytes=nbytes,
                                 pauses=pauses, pauses_sum=snap.pauses_sum + pause_s)

    def _set_version(self, version: int) -> None:  # under the lock
        if version != self._snap.version or not self._versions:
            self._versions.append((self.wall(), version))
            self._snap = replace(self._snap, version=version)

    # -- the readers' side -----------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        with self._lock:
            return replace(self._snap, beat_age_s=max(0.0, self.clock() - self._beat))

    def history(self, since: float = 0.0) -> tuple[list[Point], list[tuple[float, int]], list[Mark]]:
        """The points after ``since`` (wall clock), and every version change and mark kept."""
        with self._lock:
            points = [p for p in self._history if p.at > since]
            return points, list(self._versions), list(self._marks)
