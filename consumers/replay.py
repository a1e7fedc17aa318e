"""The replay guard: what a replay must not send again.

After a rewind (a model error) or a restart, the learner processes again the records after its
last checkpoint. Their predictions and dead letters were sent already, up to the moment the
previous run stopped: a replay sends them again only where nothing was sent. Two sources say
what was sent:

* this process's own sends: it handles each partition in order, so the next offset after the
  last record it answered says it (``answered``);
* what an earlier run sent after its checkpoint, found at start by reading the predictions,
  dead-letter and shadow topics from the positions the checkpoint recorded (``recover``):
  predictions and dead letters name the model, the mode and the source record, and predictions
  their variant.

The champion's answer and each challenger's shadow prediction are guarded apart: they go to
different topics, so a crash can leave one delivered and the other not.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from typing import Any

from consumers.clients.base import Consumer
from stream_learner.events import Partition

log = logging.getLogger("stream_learner.learner")

Position = tuple[str, int, int]  # (topic, partition, offset) of a source record
Shadow = tuple[str, int, int, str]  # a source record and the challenger that predicted it
CHAMPION = "champion"


class ReplayGuard:
    def __init__(self) -> None:
        self.answered: dict[Partition, int] = {}  # -> the next offset after this process's last
        self.recovered: set[Position] = set()  # sent by an earlier run, past its checkpoint
        self.shadows: set[Shadow] = set()  # the same, of the challengers on the shadow topic

    def sent(self, tp: Partition, where: Position) -> bool:
        """Whether the record's prediction or dead letter was sent already."""
        return where[2] < self.answered.get(tp, 0) or (bool(self.recovered) and where in self.recovered)

    def shadow_sent(self, tp: Partition, where: Position, variant: str) -> bool:
        """Whether challenger ``variant``'s prediction of the record was sent already."""
        return (where[2] < self.answered.get(tp, 0)
                or (bool(self.shadows) and (*where, variant) in self.shadows))

    def recover(self, found: set[Shadow]) -> None:
        """What an earlier run sent past its checkpoint, each with its variant."""
        self.recovered = {(t, p, o) for t, p, o, v in found if v == CHAMPION}
        self.shadows = {s for s in found if s[3] != CHAMPION}

    def answer(self, tp: Partition, offset: int) -> None:
        """The record at ``offset`` is answered (its prediction or dead letter is sent)."""
        self.answered[tp] = offset + 1

    def ahead_of(self, offsets: dict[Partition, int]) -> bool:
        """Whether something was sent for a record beyond these offsets: a checkpoint with them
        must keep the positions from which a restart finds it."""
        return (any(o > offsets.get(k, 0) for k, o in self.answered.items())
                or any(o >= offsets.get((t, p), 0) for t, p, o in self.recovered)
                or any(o >= offsets.get((t, p), 0) for t, p, o, _ in self.shadows))

    def covered(self, offsets: dict[Partition, int]) -> None:
        """A checkpoint holds these offsets: what was recovered before them is behind us."""
        self.recovered = {(t, p, o) for t, p, o in self.recovered if o >= offsets.get((t, p), 0)}
        self.shadows = {s for s in self.shadows if s[2] >= offsets.get(s[:2], 0)}


def positions(reader: Consumer, topics: dict[str, str]) -> dict[Partition, int]:
    """Where each partition of these topics (name -> its flag) ends now."""
    out: dict[Partition, int] = {}
    for topic, flag in topics.items():
        out.update({(topic, p): end for p, end in reader.end_offsets(topic, flag).items()})
    return out


def recover(reader: Consumer, *, topics: dict[str, str], start: dict[Partition, int],
            model: str, offsets: dict[Partition, int]) -> set[Shadow]:
    """The source records of the predictions and dead letters of ``model`` in mode ``learn``
    found on ``topics`` (name -> its flag) from the ``start`` positions on, at or past the
    checkpoint's ``offsets``, each with the variant that answered it (a dead letter's is the
    champion's)."""
    found: set[Shadow] = set()
    for topic, flag in topics.items():
        ends = reader.end_offsets(topic, flag)
        begin = {p: start.get((topic, p), 0) for p in ends}
        for value, headers in _read(reader, topic, begin, ends):
            where = _source(value, headers, model)
            if where is not None and where[2] >= offsets.get(where[:2], 0):
                found.add(where)
    return found


def _read(reader: Consumer, topic: str, begin: dict[int, int], ends: dict[int, int]
          ) -> Iterable[tuple[bytes | None, list[tuple[str, Any]]]]:
    pending = {p: end for p, end in ends.items() if begin[p] < end}
    if not pending:
        return
    reader.assign({(topic, p): begin[p] for p in pending})
    deadline = time.monotonic() + 60
    while pending and time.monotonic() < deadline:
        batch = reader.poll(500, 0.2)
        for m in batch.records:
            headers: Any = m.headers() or []  # a list of (name, value) from a consumer
            yield m.value(), headers
            if (m.offset() or 0) + 1 >= pending.get(m.partition() or 0, 0):
                pending.pop(m.partition() or 0, None)  # read to where it ended
        for _, partition in batch.ended:
            pending.pop(partition, None)  # read to its end
    reader.unassign()


def _source(value: bytes | None, headers: list[tuple[str, Any]], model: str) -> Shadow | None:
    """The source and variant of one of our learner's predictions (in the value) or dead
    letters (in the headers), or None for anything else."""
    try:
        if headers:
            h = {k: v.decode() for k, v in headers if v is not None}
            if h.get("model") != model or h.get("mode") != "learn":
                return None
            return h["source.topic"], int(h["source.partition"]), int(h["source.offset"]), CHAMPION
        doc = json.loads(value or b"")
        if doc.get("model") != model or doc.get("mode") != "learn":
            return None
        topic, partition, offset = doc["source"].rsplit("/", 2)
        return topic, int(partition), int(offset), str(doc.get("variant", CHAMPION))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
