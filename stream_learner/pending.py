"""Pending features: predicted events waiting for a label that arrives later.

Bounded in time (``ttl``, in event time: deterministic under replay, unlike the wall clock)
and in size (``max_pending`` events and ``max_bytes`` of their features, as ``size_of``
reckons them: the oldest is evicted first). It is part of the model state,
so it is checkpointed atomically with the model and the offsets of both topics.

>>> p = PendingLabels(ttl=10.0, max_pending=2)
>>> closed = p.add("a", Waiting({"f": 1.0}, True, None, 0.0))
>>> p.take("a", True, 1.0).x, p.take("a", True, 2.0), p.take("b", False, 3.0)
({'f': 1.0}, None, None)
>>> p.counts["matched"], p.counts["duplicate"], p.counts["early"]
(1, 1, 1)
>>> p.claim("b")  # the event of an early label arrives: it is learned at once
False
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

OUTCOMES = ("matched", "early", "late", "unknown", "duplicate", "expired", "evicted")


@dataclass(slots=True)
class Waiting:
    """An unlabelled event's features and the prediction made for it at the time."""

    x: dict[str, Any]
    y_pred: Any
    proba: dict[Any, float] | None
    ts: float
    size: int = 0  # size_of(x), once kept


MAX_BYTES = 256 * 1024 * 1024


def size_of(x: dict[str, Any]) -> int:
    """Roughly what ``x`` costs in memory and in a checkpoint, in bytes."""
    return 200 + sum(100 + len(k) + (len(v) if type(v) is str else 0) for k, v in x.items())


@dataclass
class PendingLabels:
    ttl: float
    max_pending: int
    max_bytes: int = MAX_BYTES
    bytes: int = 0  # size_of the features kept
    entries: OrderedDict[str, Waiting] = field(default_factory=OrderedDict)
    # Labels that came before their event (the two topics are not ordered with each other):
    # kept until the event comes, or counted unknown after the TTL.
    early: OrderedDict[str, tuple[Any, float]] = field(default_factory=OrderedDict)
    # Recently closed ids, to tell a late or repeated label from an unknown one (bounded too).
    expired_ids: OrderedDict[str, None] = field(default_factory=OrderedDict)
    labelled_ids: OrderedDict[str, None] = field(default_factory=OrderedDict)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    watermark: float = float("-inf")

    def emptied(self) -> PendingLabels:
        """A new, empty one with the same bounds."""
        return PendingLabels(self.ttl, self.max_pending, self.max_bytes)

    def add(self, event_id: str, waiting: Waiting) -> list[tuple[str, Waiting]]:
        """Keep an event until its label comes; returns what this evicted or expired."""
        self._drop(event_id)
        waiting.size = size_of(waiting.x)
        self.entries[event_id] = waiting
        self.bytes += waiting.size
        closed = self.advance(waiting.ts)
        while len(self.entries) > self.max_pending or (self.bytes > self.max_bytes and self.entries):
            old_id, old = self.entries.popitem(last=False)
            self.bytes -= old.size
            self._close(old_id, "evicted")
            closed.append((old_id, old))
        return closed

    def _drop(self, event_id: str) -> Waiting | None:
        waiting = self.entries.pop(event_id, None)
        if waiting is not None:
            self.bytes -= waiting.size
        return waiting

    def take(self, event_id: str, y: Any, ts: float | None) -> Waiting | None:
        """The waiting event for a label, or None: the label is late, a duplicate, or early
        (kept for its event)."""
        waiting = self._drop(event_id)
        if waiting is not None:
            self.counts["matched"] += 1
            _remember(self.labelled_ids, event_id, self.max_pending)
        elif event_id in self.expired_ids:
            self.counts["late"] += 1
        elif event_id in self.labelled_ids or event_id in self.early:
            self.counts["duplicate"] += 1
        else:
            self.counts["early"] += 1
            self.early[event_id] = (y, self.watermark if ts is None else ts)
            while len(self.early) > self.max_pending:
                self.early.popitem(last=False)
                self.counts["unknown"] += 1
        return waiting

    def claim(self, event_id: str) -> Any:
        """An early label for an arriving event (then learned at once), or None."""
        found = self.early.pop(event_id, None)
        if found is None:
            return None
        self.counts["matched"] += 1
        _remember(self.labelled_ids, event_id, self.max_pending)
        return found[0]

    def advance(self, ts: float | None) -> list[tuple[str, Waiting]]:
        """Move event time forward to ``ts``; returns the entries older than the TTL."""
        if ts is None or ts <= self.watermark:
            return []
        self.watermark = ts
        expired = []
        while self.entries:
            event_id, oldest = next(iter(self.entries.items()))
            if oldest.ts >= ts - self.ttl:
                break
            self._drop(event_id)
            self._close(event_id, "expired")
            expired.append((event_id, oldest))
        while self.early and next(iter(self.early.values()))[1] < ts - self.ttl:
            self.early.popitem(last=False)
            self.counts["unknown"] += 1
        return expired

    def _close(self, event_id: str, outcome: str) -> None:
        self.counts[outcome] += 1
        _remember(self.expired_ids, event_id, self.max_pending)


def _remember(ids: OrderedDict[str, None], event_id: str, bound: int) -> None:
    ids[event_id] = None
    if len(ids) > bound:
        ids.popitem(last=False)
