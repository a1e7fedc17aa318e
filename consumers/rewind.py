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
from dataclasses import dataclass
from typing import Any

from stream_learner.checkpoint import CheckpointMeta

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
