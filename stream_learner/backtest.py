"""Backtests: candidate specs replayed prequentially over recorded events, and a leaderboard.

Pure: no Kafka, no Redis. The records come from wherever the caller reads them (a topic range,
consumers/replay_range.py; a JSONL file, ``jsonl_records``) as ``(bytes, Source)`` pairs, in the
order they are to be learned. Each record goes the learner's way (consumers/step.py): decoded
and validated by ``stream_learner.events``, predicted by an ``Engine`` (which refuses a new class),
its prediction encoded, then learned; a record from the labels topic is joined to its waiting
event by the engine's ``PendingLabels``. What the learner dead-letters is counted here by the
same reason. Each candidate is its own ``Engine``, as if it were the learner's only model: a
candidate that raises on an event (``model_error``) goes back to its last consistent state and
replays without that event, as the learner rewinds.

``labels_delay=D`` holds back each labelled event's label and hands it to the join ``D`` records
later, in the order of ``river.stream.simulate_qa(delay=D)`` (and of ``stream-learner produce
--label-delay D``): the figures are then those of ``progressive_val_score(..., delay=D)``.

>>> records = [(b'{"x": {"a": 1.0}, "y": true}', Source("f", 0, 1)), (b'{"x": NaN}', Source("f", 0, 2))]
>>> board = backtest(records, Settings(), {"lr": "linear_model.LogisticRegression()"})
>>> entry = board.entries[0]
>>> entry.name, entry.events, entry.learned, entry.dead_letters
('lr', 2, 1, {'non_finite': 1})
"""

from __future__ import annotations

import json
import math
import pickle
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stream_learner.config import Settings
from stream_learner.engine import Engine, ModelState
from stream_learner.errors import ConfigError, InvalidEvent
from stream_learner.events import Event, Label, LateLabel, Source, check_label, decode_event, decode_label
from stream_learner.events import encode_prediction as _encode
from stream_learner.metrics import default_metrics
from stream_learner.models import check_spec, infer_task
from stream_learner.pending import PendingLabels

Item = tuple[bytes | None, Source]  # one record: its value, and where it came from
Step = Event | LateLabel  # what a candidate is handed: a decoded event, or a label for one
# Rejections after which a model may be half-updated: back to the last consistent state (as the
# learner's REWINDS).
REWINDS = ("model_error", "internal_error")
# A candidate keeps a consistent state at least this often (in steps), to rewind to.
SNAPSHOT_EVERY = 10_000


@dataclass
class Entry:
    """One candidate's line of the leaderboard.

    ``metrics``: the learner's prequential metrics, cumulative (``Accuracy``) and over the last
    ``--rolling-window`` scored events (``Accuracy@1000``), full precision, None while not a
    finite number. ``events``: records read; ``learned``: events learned; ``scored``: predictions
    scored; ``dead_letters``: rejections by reason; ``labels``: the late-label join's outcomes;
    ``seconds``: the time spent in this candidate's decode, predict, encode and learn;
    ``model_bytes``: the size of the trained model pickled (what a checkpoint holds of it)."""

    name: str
    spec: str
    metrics: dict[str, float | None]
    events: int
    learned: int
    scored: int
    dead_letters: dict[str, int]
    labels: dict[str, int]
    seconds: float
    model_bytes: int
    error: str = ""
    rank: int = 0

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "name": self.name, "spec": self.spec, "metrics": self.metrics,
                "events": self.events, "learned": self.learned, "scored": self.scored,
                "dead_letters": self.dead_letters, "labels": self.labels, "seconds": self.seconds,
                "events_per_s": self.events_per_s, "model_bytes": self.model_bytes, "error": self.error}


@dataclass
class Leaderboard:
    """The candidates, best first by ``rank_by`` (``bigger_is_better`` says which way)."""

    task: str
    rank_by: str
    bigger_is_better: bool
    entries: list[Entry] = field(default_factory=list)

    def table(self) -> str:
        """The leaderboard as a text table: the cumulative metrics (and the rolling one ranked by),
        learned events, dead letters, events/s and the pickled model's size."""
        names = [type(m).__name__ for m in default_metrics(self.task)]
        if self.rank_by not in names:
            names.append(self.rank_by)
        head = ["rank", "candidate", *names, "learned", "dead letters", "events/s", "model size"]
        rows = [head]
        for e in self.entries:
            shown = ["-" if e.metrics.get(n) is None else f"{e.metrics[n]:.4f}" for n in names]
            rows.append([str(e.rank), e.name, *shown, str(e.learned), str(sum(e.dead_letters.values())),
                         f"{e.events_per_s:,.0f}", _size(e.model_bytes)])
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                           for i, (c, w) in enumerate(zip(r, widths, strict=True))) for r in rows]
        order = "higher" if self.bigger_is_better else "lower"
        notes = [f"ranked by {self.rank_by} ({order} is better)"]
        notes += [f"{e.name} stopped: {e.error}" for e in self.entries if e.error]
        return "\n".join([*lines, *notes])

    def as_dict(self) -> dict[str, Any]:
        return {"task": self.task, "rank_by": self.rank_by, "bigger_is_better": self.bigger_is_better,
                "candidates": [e.as_dict() for e in self.entries]}


class Candidate:
    """One spec replayed as the learner would: its engine, its rejections, its rewind point."""

    def __init__(self, name: str, spec: str, settings: Settings, task: str,
                 default_label: Label | None, pending: bool) -> None:
        s = settings
        self.name, self.settings = name, s
        self.state = ModelState.fresh(spec, task, s.rolling_window, default_label=default_label,
                                      max_features=s.max_features,
                                      pending=PendingLabels(s.label_ttl, s.max_pending, s.max_pending_bytes)
                                      if pending else None)
        self.engine = Engine(self.state, max_classes=s.max_classes)
        self.dead_letters: dict[str, int] = {}
        self.seconds = 0.0
        self.error = ""
        self.point = self._pickled()  # a consistent state, and the steps handled since it
        self.since: list[Step] = []
        self.model_errors = 0  # in a row
        self.first_model_error = ""

    def _pickled(self) -> bytes:
        return pickle.dumps(self.state, protocol=pickle.HIGHEST_PROTOCOL)

    def reject(self, reason: str) -> None:
        self.dead_letters[reason] = self.dead_letters.get(reason, 0) + 1

    def step(self, step: Step) -> None:
        """Handle one decoded event or label; a rejection is counted, a model error rewinds."""
        if self.error:
            return
        started = time.perf_counter()
        try:
            self._apply(step)
        except InvalidEvent as exc:
            if exc.reason in REWINDS:
                self._rewind(exc)
            else:
                self.reject(exc.reason)
                self._handled(step)
        else:
            self.model_errors = 0
            self._handled(step)
        self.seconds += time.perf_counter() - started

    def _apply(self, step: Step) -> None:
        """The learner's step (consumers/step.py): predict, encode, learn; or join a label."""
        engine = self.engine
        try:
            if isinstance(step, LateLabel):
                engine.label(step)
                return
            prediction = engine.predict(step)
            try:
                _encode(prediction, model=self.name, version=0, mode="evaluate")
            except (TypeError, ValueError) as exc:
                raise InvalidEvent("model_error", f"the prediction cannot be encoded: {exc}") from exc
            engine.learn(prediction)
        except InvalidEvent:
            raise
        except Exception as exc:
            raise InvalidEvent("internal_error", f"{type(exc).__name__}: {exc}") from exc

    def _handled(self, step: Step) -> None:
        self.since.append(step)
        if len(self.since) >= SNAPSHOT_EVERY:
            self.point, self.since = self._pickled(), []

    def _rewind(self, exc: InvalidEvent) -> None:
        """Back to the rewind point, the steps since replayed without this one (dead-lettered),
        and a new point kept there (as the learner's Rewinder). A model that has learned nothing
        and raised on ``--max-model-errors`` steps in a row is broken: it stops."""
        self.reject(exc.reason)
        self.model_errors += 1
        self.first_model_error = self.first_model_error or str(exc)
        replay, self.since = self.since, []
        self.state = pickle.loads(self.point)  # pickled by this very process
        self.engine = Engine(self.state, max_classes=self.settings.max_classes)
        for step in replay:
            try:
                self._apply(step)
            except InvalidEvent as again:  # rejected the first time too, unless the model is odd
                if again.reason in REWINDS:
                    self.error = f"the model raised again when replayed: {again}"
                    return
        self.point = self._pickled()
        if self.model_errors >= self.settings.max_model_errors and not self.state.learned:
            self.error = (f"the model raised on {self.model_errors} events in a row and has learned "
                          f"none (--max-model-errors); the first: {self.first_model_error}")

    def entry(self, events: int, decode_seconds: float) -> Entry:
        state = self.state
        metrics: dict[str, float | None] = {}
        for metric in state.metrics.cumulative:
            metrics[type(metric).__name__] = _value(metric.get())
        for metric in state.metrics.rolling():
            metrics[f"{type(metric).__name__}@{state.metrics.window}"] = _value(metric.get())
        labels = dict(state.pending.counts) if state.pending is not None else {}
        return Entry(self.name, state.spec, metrics, events, state.learned, state.metrics.updates,
                     dict(sorted(self.dead_letters.items())), labels, self.seconds + decode_seconds,
                     len(pickle.dumps(state.model, protocol=pickle.HIGHEST_PROTOCOL)), self.error)


def _size(nbytes: int) -> str:
    """``1562`` -> ``1.5 KiB``."""
    size = float(nbytes)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024 or unit == "MiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"  # pragma: no cover


def _value(value: Any) -> float | None:
    if isinstance(value, complex) or not math.isfinite(value):
        return None
    return float(value)


def check_candidates(candidates: dict[str, str], settings: Settings) -> str:
    """The task every candidate does (``--task``, or the first one's): ``ConfigError`` naming the
    candidate whose spec cannot be built, fails on a first event, or does another task."""
    if not candidates:
        raise ConfigError("--candidate: give at least one NAME=SPEC")
    task = settings.task
    for name, spec in candidates.items():
        model = check_spec(spec, task, flag=f"--candidate {name}")
        if task == "auto":
            task = infer_task(model, task)
    return task


def rank_metric(task: str, rank_by: str, window: int) -> tuple[str, bool]:
    """The metric the leaderboard ranks by (default: the task's first) and whether bigger is
    better; ``ConfigError`` naming ``--rank-by`` for a metric the learner does not report."""
    names = {type(m).__name__: m.bigger_is_better for m in default_metrics(task)}
    if not rank_by:
        first = next(iter(names))
        return first, names[first]
    base, at, size = rank_by.partition("@")
    if base not in names or (at and size != str(window)):
        shown = [*names, *(f"{n}@{window}" for n in names)]
        raise ConfigError(f"--rank-by {rank_by}: not a metric of a {task} model; one of {', '.join(shown)}")
    return rank_by, names[base]


def _default_label(settings: Settings, task: str) -> Label | None:
    if not settings.default_label:
        return None
    try:
        return check_label(json.loads(settings.default_label), task)
    except (ValueError, InvalidEvent) as exc:
        raise ConfigError(f"--default-label: not a {task} label: {exc}") from None


class Replay:
    """The records decoded once for every candidate, and the labels held back by a delay."""

    def __init__(self, settings: Settings, task: str, labels_delay: int) -> None:
        self.fields, self.limits = settings.event_fields(), settings.event_limits()
        self.labels_topic, self.task, self.delay = settings.labels_topic, task, labels_delay
        self.held: deque[tuple[int, LateLabel]] = deque()  # (record number, label)
        self.events = 0  # event records read (not labels-topic ones)
        self.seconds = 0.0  # spent decoding
        self.clock: float | None = None  # the last event's time: a held label's time

    def steps(self, raw: bytes | None, source: Source) -> Iterator[Step | InvalidEvent]:
        """What one record hands the candidates: the labels due before it, then itself (or why
        it is rejected)."""
        started = time.perf_counter()
        try:
            if self.labels_topic and source.topic == self.labels_topic:
                found: Step | InvalidEvent = decode_label(raw, source, self.fields, self.task, self.limits)
            else:
                while self.held and self.held[0][0] + self.delay <= self.events:
                    yield self.timed(self.held.popleft()[1])
                self.events += 1
                found = decode_event(raw, source, self.fields, self.task, self.limits)
                self.clock = found.ts if found.ts is not None else self.clock
                if self.delay and found.y is not None:
                    self.held.append((self.events - 1, LateLabel(found.id, found.y, None, source)))
                    found.y = None
        except InvalidEvent as exc:
            found = exc
        except Exception as exc:  # as the learner's step: that record's error, never the run's
            found = InvalidEvent("internal_error", f"{type(exc).__name__}: {exc}")
        self.seconds += time.perf_counter() - started
        yield found

    def rest(self) -> Iterator[LateLabel]:
        """The labels still held when the records end: each one comes, as in simulate_qa."""
        while self.held:
            yield self.timed(self.held.popleft()[1])

    def timed(self, label: LateLabel) -> LateLabel:
        """A held label as it is handed over: at the time of the last event read."""
        return LateLabel(label.id, label.y, self.clock, label.source)


def backtest(records: Iterable[Item], settings: Settings, candidates: dict[str, str], *,
             labels_delay: int = 0, rank_by: str = "") -> Leaderboard:
    """Replay ``records`` through every candidate (name -> spec) and rank them.

    Parameters
    ----------
    records
        ``(value, Source)`` pairs in the order to learn them; a record of ``settings.labels_topic``
        is a late label.
    settings
        The learner's settings: event fields and limits, task, rolling window, feature budget,
        classes, late-label bounds and default label.
    candidates
        Name -> spec, built through ``stream_learner.models`` (River's modules only).
    labels_delay
        Hand each event's label to the join this many records later (0: at once).
    rank_by
        The metric to rank by (default: the task's first, e.g. Accuracy or MAE).

    Returns
    -------
    Leaderboard
        One entry per candidate, best first; a candidate whose spec stopped learning last.
    """
    if labels_delay < 0:
        raise ConfigError(f"--labels-delay: must be at least 0, got {labels_delay}")
    task = check_candidates(candidates, settings)
    rank, bigger = rank_metric(task, rank_by, settings.rolling_window)
    default_label = _default_label(settings, task)
    pending = bool(settings.labels_topic) or labels_delay > 0
    runs = [Candidate(n, spec, settings, task, default_label, pending) for n, spec in candidates.items()]
    replay = Replay(settings, task, labels_delay)
    for raw, source in records:
        for step in replay.steps(raw, source):
            if isinstance(step, InvalidEvent):
                for run in runs:
                    run.reject(step.reason)
                continue
            for run in runs:
                run.step(step)
    for label in replay.rest():
        for run in runs:
            run.step(label)
    board = Leaderboard(task, rank, bigger, [r.entry(replay.events, replay.seconds) for r in runs])
    _rank(board)
    return board


def _rank(board: Leaderboard) -> None:
    """Best first; a candidate without a value (or stopped) last, in the order given."""
    def key(entry: Entry) -> tuple[int, float]:
        value = entry.metrics.get(board.rank_by)
        if value is None or entry.error:
            return 1, 0.0
        return 0, -value if board.bigger_is_better else value

    board.entries.sort(key=key)
    for i, entry in enumerate(board.entries, 1):
        entry.rank = i


def jsonl_records(path: Path) -> Iterator[Item]:
    """The lines of a JSONL file as records: ``Source(file name, 0, line number)``, so an event
    without an id is ``name/0/line``; blank lines are skipped. ``ConfigError`` naming ``--file``
    when the file cannot be read."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise ConfigError(f"--file {path}: cannot read it: {exc.strerror or exc}") from None
    with handle:
        try:
            for number, line in enumerate(handle, 1):
                if line.strip():
                    yield line.rstrip(b"\r\n"), Source(path.name, 0, number)
        except OSError as exc:
            raise ConfigError(f"--file {path}: cannot read it: {exc.strerror or exc}") from None
