"""A checkpoint written by a forked child, so that the learning loop stops only for fork().

fork() gives the child a copy-on-write image of the learner at one instant, consistent with the
offsets the loop had reached: Redis's BGSAVE snapshots its dataset the same way. The child
pickles the state at once, then waits until the parent sends the predictions topic's positions,
which the parent does only once every send made before that instant is acknowledged (the
checkpoint protocol's flush, without blocking the loop). Then it signs the record, writes it
(fenced, like any save) and reports the outcome on a pipe. The parent keeps consuming meanwhile.

The child touches nothing but the state, the store and its two pipes: not the Kafka clients,
whose threads do not exist in it, and it leaves with ``os._exit`` so that no finalizer of the
parent's objects runs there. If the parent dies, the child sees the end of the pipe and exits
unsaved; a child already saving is fenced like any zombie writer.
"""

from __future__ import annotations

import gc
import json
import os
import pickle
from dataclasses import dataclass
from typing import Any

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
        self._go: int | None = go
        self._result = result
        self._received = bytearray()
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
        os.set_blocking(result_r, False)
        return cls(pid, go_w, result_r)

    @property
    def released(self) -> bool:
        return self._go is None

    def release(self, published: dict[str, int]) -> None:
        """Every send before the snapshot is acknowledged: let the child write, with these
        predictions-topic positions in the header."""
        assert self._go is not None
        _write_all(self._go, json.dumps(published).encode())
        os.close(self._go)
        self._go = None

    def abort(self) -> None:
        """Let the child go without writing (it reads the end of the pipe) and reap it."""
        if self._go is not None:
            os.close(self._go)
            self._go = None
        self.wait()

    def poll(self) -> Outcome | None:
        """The outcome if the child has finished, else None; never blocks."""
        while self.outcome is None:
            try:
                chunk = os.read(self._result, 65536)
            except BlockingIOError:
                return None
            if chunk:
                self._received += chunk
            else:
                self._finish()
        return self.outcome

    def wait(self) -> Outcome:
        os.set_blocking(self._result, True)
        outcome = self.poll()
        assert outcome is not None
        return outcome

    def _finish(self) -> None:
        os.close(self._result)
        _, status = os.waitpid(self.pid, 0)
        try:
            doc = json.loads(self._received)
        except ValueError:
            self.outcome = Outcome(error=CheckpointError(
                f"checkpoint writer {self.pid} ended without a report (wait status {status})"))
            return
        if "error" in doc:
            error_type = _ERRORS.get(doc["error"], CheckpointError)
            self.outcome = Outcome(error=error_type(doc["message"]))
        else:
            self.outcome = Outcome(doc["payload_bytes"], doc["metrics"])


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
