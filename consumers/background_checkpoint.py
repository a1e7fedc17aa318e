"""A checkpoint written by a forked child, so that the learning loop stops only for fork().

fork() gives the child a copy-on-write image of the learner at one instant, consistent with the
offsets the loop had reached: Redis's BGSAVE snapshots its dataset the same way. The child
pickles the state at once, then waits until the parent sends the predictions topic's positions,
which the parent does only once every send made before that instant is acknowledged (the
checkpoint protocol's flush, without blocking the loop). Then it signs the record, writes it
(fenced, like any save) and reports the outcome on a pipe. The parent keeps consuming meanwhile.

In the parent, a thread of its own carries the positions to the child and brings back the
report: the loop makes no system call for a checkpoint but the fork, since each one hands the
GIL to Kafka's client threads and getting it back cost the loop up to 5 ms.

The child touches nothing but the state, the store and its two pipes: not the Kafka clients,
whose threads do not exist in it, and it leaves with ``os._exit`` so that no finalizer of the
parent's objects runs there. If the parent dies, the child sees the end of the pipe and exits
unsaved; a child already saving is fenced like any zombie writer.
"""

from __future__ import annotations

import _thread
import gc
import json
import os
import pickle
import threading
from dataclasses import dataclass
from typing import Any

from consumers import crashpoints
from stream_learner.checkpoint import CheckpointMeta, describe, seal_payload
from stream_learner.engine import ModelState
from stream_learner.errors import CheckpointError, FencedError, StoreUnavailable, StreamLearnerError
from stream_learner.store import ModelStore

_ERRORS: dict[str, type[StreamLearnerError]] = {
    "StoreUnavailable": StoreUnavailable, "FencedError": FencedError, "CheckpointError": CheckpointError,
}


@dataclass
class Outcome:
    """What the child reports: the record's size and metrics, or the error it met."""

    payload_bytes: int = 0
    metrics: dict[str, float | None] | None = None
    error: StreamLearnerError | None = None


class BackgroundCheckpoint:
    """One forked checkpoint writer: ``start``, ``release`` once the sends are acknowledged,
    then ``poll`` (or ``wait``) for the outcome."""

    def __init__(self, pid: int, go: int, result: int) -> None:
        self.pid = pid
        self._go = go
        self._result = result
        self._go_ahead: bytes | None = None
        self._handed = threading.Event()  # released, or aborted
        self._done = threading.Event()
        self.released = False
        self.outcome: Outcome | None = None

    @classmethod
    def start(cls, state: ModelState, meta: CheckpointMeta, store: ModelStore, key_id: str,
              key: bytes, keep: int) -> BackgroundCheckpoint:
        go_r, go_w = os.pipe()
        result_r, result_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            status = 1
            try:
                gc.disable()  # no finalizer of the parent's objects may run here
                os.close(go_w)
                os.close(result_r)
                status = _write(state, meta, store, key_id, key, keep, go_r, result_w)
            finally:
                os._exit(status)
        os.close(go_r)
        os.close(result_w)
        writer = cls(pid, go_w, result_r)
        # Not threading.Thread: its start() waits for the thread to run, which can be a GIL switch.
        _thread.start_new_thread(writer._carry, ())
        return writer

    def release(self, published: dict[str, int]) -> None:
        """Every send before the snapshot is acknowledged: let the child write, with these
        predictions-topic positions in the header."""
        assert not self.released
        self._go_ahead = json.dumps(published).encode()
        self.released = True
        self._handed.set()

    def abort(self) -> None:
        """Let the child go without writing (it reads the end of the pipe) and reap it."""
        self._handed.set()
        self.wait()

    def poll(self) -> Outcome | None:
        """The outcome if the child has finished, else None; never blocks."""
        return self.outcome if self._done.is_set() else None

    def wait(self) -> Outcome:
        self._done.wait()
        assert self.outcome is not None
        return self.outcome

    def _carry(self) -> None:
        """The courier thread: the go-ahead (or the end of the pipe) to the child, its report back."""
        try:
            self._handed.wait()
            if self._go_ahead is not None:
                _write_all(self._go, self._go_ahead)
                if crashpoints.ARMED:
                    crashpoints.hit("during_checkpoint")
            os.close(self._go)
            report = _read_all(self._result)
            os.close(self._result)
            _, status = os.waitpid(self.pid, 0)
            self.outcome = _outcome(report, f"checkpoint writer {self.pid} ended without a report "
                                            f"(wait status {status})")
        except BaseException as exc:  # an OS error on a pipe: the loop must hear of it
            self.outcome = Outcome(error=CheckpointError(f"checkpoint writer {self.pid}: {exc}"))
        finally:
            self._done.set()


def _outcome(report: bytes, silent: str) -> Outcome:
    try:
        doc = json.loads(report)
    except ValueError:
        return Outcome(error=CheckpointError(silent))
    if "error" in doc:
        return Outcome(error=_ERRORS.get(doc["error"], CheckpointError)(doc["message"]))
    return Outcome(doc["payload_bytes"], doc["metrics"])


def _write(state: ModelState, meta: CheckpointMeta, store: ModelStore, key_id: str, key: bytes,
           keep: int, go: int, result: int) -> int:
    """The child's work; returns its exit status."""
    report: dict[str, Any]
    try:
        describe(meta, state, key_id)
        payload = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
        released = _read_all(go)
        if not released:
            return 1  # the parent aborted or died: write nothing
        meta.published = json.loads(released)
        store.save(meta.model, meta.version, seal_payload(meta, payload, key), meta.token, keep)
        report = {"payload_bytes": len(payload), "metrics": meta.metrics}
    except StreamLearnerError as exc:
        report = {"error": type(exc).__name__, "message": str(exc)}
    except Exception as exc:  # a model that does not pickle, or anything unforeseen
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
