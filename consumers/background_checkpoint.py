"""Checkpoints written off the learning loop, so that it stops for a snapshot and nothing more.

The snapshot is taken at one instant, consistent with the offsets the loop had reached, in one
of two ways:

* ``PickledCheckpoint``: the loop pickles the state itself, and a thread signs and writes the
  bytes. For models that pickle in a millisecond or two (a linear model: ~0.5 ms), this is the
  shortest pause there is, and the loop runs on at full speed afterwards. Its pickling stops
  at a size limit, so that finding out that a model is too large for it costs little.
* ``ForkedCheckpoint``: ``fork()`` gives a child a copy-on-write image of the learner, as Redis's
  BGSAVE snapshots its dataset; the child pickles it while the parent consumes on. The pause is
  the ``fork()`` (~5 ms, whatever the model's size), and for a while after it the parent's first
  write to each page of its heap copies that page: the price of not pickling ~175 ms of forest
  in the loop.

Either way the writer waits until the loop releases it with the predictions topic's positions,
which the loop does only once every send made before the snapshot is acknowledged (the
checkpoint protocol's flush, without blocking the loop). Then it signs the record, writes it
(fenced, like any save) and reports the outcome.

A forked child touches nothing but the state, the store and its two pipes: not the Kafka
clients, whose threads do not exist in it, and it leaves with ``os._exit`` so that no finalizer
of the parent's objects runs there. A thread of the parent carries the go-ahead to it and
brings back its report: the loop makes no system call for a checkpoint but the fork, since each
one hands the GIL to the process's other threads, and getting it back can cost the loop up to
the 5 ms switch interval. If the
parent dies, the child sees the end of the pipe and exits unsaved; a child already saving is
fenced like any zombie writer.
"""

from __future__ import annotations

import _thread
import gc
import json
import os
import threading
from dataclasses import dataclass, replace
from typing import Any

from consumers import crashpoints
from stream_learner.checkpoint import CheckpointMeta, described, pickle_state, seal_payload
from stream_learner.engine import ModelState
from stream_learner.errors import (
    CheckpointError,
    FencedError,
    OutOfOrder,
    StoreUnavailable,
    StreamLearnerError,
)
from stream_learner.state.base import ModelStore, SaveRules

_ERRORS: dict[str, type[StreamLearnerError]] = {
    "StoreUnavailable": StoreUnavailable, "FencedError": FencedError, "CheckpointError": CheckpointError,
    "OutOfOrder": OutOfOrder,
}


@dataclass
class Outcome:
    """What the writer reports: the record's size and metrics, or the error it met."""

    payload_bytes: int = 0
    metrics: dict[str, float | None] | None = None
    error: StreamLearnerError | None = None


class BackgroundCheckpoint:
    """One checkpoint writer: started with ``start``, ``release``d once the sends are
    acknowledged, then ``poll``ed (or ``wait``ed) for the outcome."""

    kind = ""  # how the snapshot was taken, for the log
    pid = 0  # the forked child's, if there is one
    payload: bytes | None = None  # the pickled state, when the loop pickled it

    def __init__(self) -> None:
        self._published: dict[str, int] | None = None
        self._handed = threading.Event()  # released, or aborted
        self._done = threading.Event()
        self.released = False
        self.outcome: Outcome | None = None

    def release(self, published: dict[str, int]) -> None:
        """Every send before the snapshot is acknowledged: write, with these predictions-topic
        positions in the header."""
        assert not self.released
        self._published = published
        self.released = True
        self._handed.set()

    def abort(self) -> None:
        """Write nothing, and wait until the writer is gone."""
        self._handed.set()
        self.wait()

    def poll(self) -> Outcome | None:
        """The outcome if the writer has finished, else None; never blocks."""
        return self.outcome if self._done.is_set() else None

    def wait(self) -> Outcome:
        self._done.wait()
        assert self.outcome is not None
        return self.outcome

    def _run(self) -> None:
        # Not threading.Thread: its start() waits for the thread to run, which can be a GIL switch.
        _thread.start_new_thread(self._carry, ())

    def _carry(self) -> None:
        try:
            self.outcome = self._write()
        except StreamLearnerError as exc:
            self.outcome = Outcome(error=exc)
        except BaseException as exc:  # e.g. an OS error on a pipe: the loop must hear of it
            self.outcome = Outcome(error=CheckpointError(f"{self}: {exc}"))
        finally:
            self._done.set()

    def _write(self) -> Outcome:
        raise NotImplementedError


class PickledCheckpoint(BackgroundCheckpoint):
    """Pickled in the loop; a thread signs and writes the bytes."""

    kind = "pickled in the loop"

    def __init__(self, meta: CheckpointMeta, payload: bytes, store: ModelStore, key: bytes,
                 keep: SaveRules) -> None:
        super().__init__()
        self._meta, self.payload = meta, payload
        self._store, self._key, self._keep = store, key, keep

    def __str__(self) -> str:
        return f"checkpoint writer for v{self._meta.version}"

    @classmethod
    def start(cls, state: ModelState, meta: CheckpointMeta, store: ModelStore, key_id: str,
              key: bytes, keep: SaveRules, limit: int) -> PickledCheckpoint | None:
        """The writer, or None (and no writer) if the pickle grows beyond ``limit`` bytes."""
        payload = pickle_state(state, meta, limit)
        if payload is None:
            return None
        writer = cls(described(meta, state, key_id), payload, store, key, keep)
        writer._run()
        return writer

    def _write(self) -> Outcome:
        self._handed.wait()
        if self._published is None:
            return Outcome(error=CheckpointError(f"{self}: aborted"))
        if crashpoints.ARMED:
            crashpoints.hit("during_checkpoint")
        assert self.payload is not None
        meta = replace(self._meta, published=self._published)
        return _save(meta, self.payload, self._store, self._key, self._keep)


class ForkedCheckpoint(BackgroundCheckpoint):
    """Pickled and written by a forked child; a thread carries the go-ahead and the report."""

    kind = "forked"

    def __init__(self, pid: int, go: int, result: int) -> None:
        super().__init__()
        self.pid = pid
        self._go = go
        self._result = result

    def __str__(self) -> str:
        return f"checkpoint writer {self.pid}"

    @classmethod
    def start(cls, state: ModelState, meta: CheckpointMeta, store: ModelStore, key_id: str,
              key: bytes, keep: SaveRules) -> ForkedCheckpoint:
        go_r, go_w = os.pipe()
        result_r, result_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            status = 1
            try:
                gc.disable()  # no finalizer of the parent's objects may run here
                os.close(go_w)
                os.close(result_r)
                status = _child(state, meta, store, key_id, key, keep, go_r, result_w)
            finally:
                os._exit(status)
        os.close(go_r)
        os.close(result_w)
        writer = cls(pid, go_w, result_r)
        writer._run()
        return writer

    def _write(self) -> Outcome:
        """The go-ahead (or the end of the pipe) to the child, its report back."""
        self._handed.wait()
        if self._published is not None:
            _write_all(self._go, json.dumps(self._published).encode())
            if crashpoints.ARMED:
                crashpoints.hit("during_checkpoint")
        os.close(self._go)
        report = _read_all(self._result)
        os.close(self._result)
        _, status = os.waitpid(self.pid, 0)
        return _outcome(report, f"{self} ended without a report (wait status {status})")


def _outcome(report: bytes, silent: str) -> Outcome:
    try:
        doc = json.loads(report)
    except ValueError:
        return Outcome(error=CheckpointError(silent))
    if "error" in doc:
        return Outcome(error=_ERRORS.get(doc["error"], CheckpointError)(doc["message"]))
    return Outcome(doc["payload_bytes"], doc["metrics"])


def _save(meta: CheckpointMeta, payload: bytes, store: ModelStore, key: bytes, keep: SaveRules) -> Outcome:
    store.save(meta.model, meta.version, seal_payload(meta, payload, key), meta.token, keep.keep,
               serve=keep.serve, reclaim=keep.reclaim)
    return Outcome(len(payload), meta.metrics)


def _child(state: ModelState, meta: CheckpointMeta, store: ModelStore, key_id: str, key: bytes,
           keep: SaveRules, go: int, result: int) -> int:
    """The forked child's work; returns its exit status."""
    report: dict[str, Any]
    try:
        payload = pickle_state(state, meta)
        assert payload is not None
        meta = described(meta, state, key_id)
        released = _read_all(go)
        if not released:
            return 1  # the parent aborted or died: write nothing
        meta = replace(meta, published=json.loads(released))
        outcome = _save(meta, payload, store, key, keep)
        report = {"payload_bytes": outcome.payload_bytes, "metrics": outcome.metrics}
    except StreamLearnerError as exc:
        report = {"error": type(exc).__name__, "message": str(exc)}
    except Exception as exc:  # anything unforeseen
        report = {"error": "CheckpointError", "message": f"checkpoint v{meta.version}: "
                                                         f"{type(exc).__name__}: {exc}"}
    _write_all(result, json.dumps(report).encode())
    return 0


def _read_all(fd: int) -> bytes:
    data = bytearray()
    while chunk := os.read(fd, 65536):
        data += chunk
    return bytes(data)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
