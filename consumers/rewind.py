"""Rewinds: back to the last consistent state after the model raised on an event, without Kafka.

A model that raises mid-update may be half-updated, so the learner goes back to its *rewind
point* (a state consistent with its offsets) and handles again what came after it, without the
event. The point is the last checkpoint, or a snapshot kept in memory after each model error's
dead letter, so that a stream with many model errors costs one short replay each, not a replay
of the whole checkpoint interval per error. The records handled since the point are kept in
memory and replayed from there: seeking back would wait for a fetch (~0.1 s) per error.

>>> handled = Handled(max_bytes=200)  # each record counts its value and 64 bytes
>>> for value in (b"abc", b"def"):
...     handled.add(value)
>>> handled.since(0), handled.since(1)
([b'abc', b'def'], [b'def'])
>>> handled.add(b"0123456789")  # past the bound: a rewind to before this must seek
>>> handled.since(0) is None, handled.seq
(True, 3)
>>> handled.restart_at(3); handled.add(b"x"); handled.since(3)
[b'x']
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from consumers.clients.base import Record
from stream_learner.checkpoint import CheckpointMeta
from stream_learner.config import Settings
from stream_learner.errors import InvalidEvent, ModelBroken
from stream_learner.events import Partition

MAX_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class RewindPoint:
    """Where a rewind goes: the state pickled in ``payload`` with its ``meta`` (None: the
    store's latest checkpoint), after the first ``seq`` records handled, ``since`` of them since
    the store's latest checkpoint."""

    payload: bytes | None = None
    meta: CheckpointMeta | None = None
    seq: int = 0
    since: int = 0


class Rewind(Exception):
    """A model raised mid-update: go back to the rewind point and replay without the event."""


Where = tuple[str, int, int]  # topic, partition, offset


class Rewinder:
    """The rewind point, the records handled since, and the records the model raised on."""

    def __init__(self) -> None:
        self.point = RewindPoint()  # the last checkpoint, or a snapshot
        self.handled = Handled()  # the records since that point, replayed by a rewind
        self.poisoned: dict[Where, InvalidEvent] = {}  # dead-lettered when they come round again
        self.snapshot_now = False  # after a model error's dead letter: so no replay repeats it
        self.model_errors = 0  # consecutive events dead-lettered as model errors
        self.first_model_error: InvalidEvent | None = None

    def poison(self, where: Where, error: InvalidEvent) -> Rewind:
        """The model raised on the record at ``where``: what to raise to rewind."""
        self.poisoned[where] = error
        return Rewind(error)

    def dead_lettered(self, error: InvalidEvent) -> None:
        """A model error is dead-lettered: a rewind point follows at once, so that no later
        rewind replays it."""
        self.snapshot_now = True
        self.model_errors += 1
        if self.model_errors == 1:
            self.first_model_error = error

    def keep(self, payload: bytes, meta: CheckpointMeta, since: int, offsets: dict[Partition, int]) -> None:
        """A snapshot of the state as it is now (at ``offsets``): the point the next rewind
        goes to."""
        self.snapshot_now = False
        self.point = RewindPoint(payload, meta, self.handled.seq, since)
        self.handled.drop_before(self.point.seq)
        self._covered(offsets)

    def saved(self, seq: int, payload: bytes | None, meta: CheckpointMeta,
              offsets: dict[Partition, int]) -> None:
        """A checkpoint of the first ``seq`` records (at ``offsets``) is saved: the new point,
        unless a later snapshot was kept since."""
        if seq >= self.point.seq:
            self.point = RewindPoint(payload, meta if payload is not None else None, seq)
            self.handled.drop_before(seq)
        self._covered(offsets)

    def _covered(self, offsets: dict[Partition, int]) -> None:
        self.poisoned = {(t, p, o): e for (t, p, o), e in self.poisoned.items()
                         if o >= offsets.get((t, p), 0)}

    def broken(self, settings: Settings, *, learned: int) -> ModelBroken | None:
        """A model that has never learned an event and raised on ``--max-model-errors`` in a
        row has a broken spec. A model that has learned is not stopped by any events: they are
        the events' fault."""
        if self.model_errors < settings.max_model_errors or learned:
            return None
        return ModelBroken(
            f"--model-spec {settings.model_spec!r}: the model raised on {self.model_errors} events "
            f"in a row and has learned none (--max-model-errors); the first: {self.first_model_error}")


class Handled:
    """The records handled since the rewind point, in order, bounded by ``max_bytes``."""

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.records: deque[tuple[int, Any]] = deque()
        self.bytes = 0
        self.seq = 0  # records handled so far: the number of the next one
        self.lost_before = 0  # records before this one were let go unreplayed

    def add(self, record: Any) -> None:
        size = _size(record)
        if self.bytes + size > self.max_bytes:
            self.records.clear()
            self.bytes = 0
            self.seq += 1
            self.lost_before = self.seq
            return
        self.records.append((self.seq, record))
        self.bytes += size
        self.seq += 1

    def drop_before(self, seq: int) -> None:
        """The rewind point moved to ``seq``: nothing before it is replayed again."""
        records = self.records
        while records and records[0][0] < seq:
            self.bytes -= _size(records.popleft()[1])

    def since(self, seq: int) -> list[Any] | None:
        """The records handled from ``seq`` on, or None when some of them were let go."""
        if seq < self.lost_before:
            return None
        return [record for number, record in self.records if number >= seq]

    def restart_at(self, seq: int) -> None:
        """A rewind to ``seq``: what follows is handled again (and added again)."""
        self.records.clear()
        self.bytes = 0
        self.seq = seq
        self.lost_before = min(self.lost_before, seq)

    def forget(self) -> None:
        """The partitions changed hands: a rewind before now must seek."""
        self.records.clear()
        self.bytes = 0
        self.lost_before = self.seq


def _size(record: Any) -> int:
    value = record.value() if hasattr(record, "value") else record
    return len(value or b"") + 64


def follows_on(records: list[Record], offsets: Mapping[Partition, int],
               first_seen: Mapping[Partition, int]) -> bool:
    """Whether ``records`` go on, in each partition, exactly where ``offsets`` (else
    ``first_seen``) end."""
    expected: dict[Partition, int | None] = {}
    for record in records:
        key = (record.topic() or "", record.partition() or 0)
        if key not in expected:
            expected[key] = offsets.get(key, first_seen.get(key))
        if record.offset() != expected[key]:
            return False
        expected[key] = (record.offset() or 0) + 1
    return True
