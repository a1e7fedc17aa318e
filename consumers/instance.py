"""The instance id a learner takes its writer lease under.

A lease held by an instance id is taken back at once by the same id, so that a learner
restarted after a crash need not wait for its dead predecessor's lease to expire; another id
waits as a standby. By default the id is the host name, which tells two hosts (or two pods)
apart but not two learners started by hand on one machine. So each learner of a model also
takes the first free *slot* on its host: a file lock, which the kernel releases when its
process dies, however it dies. The first slot's id is the host name; the others' add the slot
(``host/1``). Two learners on one host get two ids, one learns and one waits; a learner that
restarts after a crash finds its slot free again and takes its own lease back at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import tempfile
from pathlib import Path

from stream_learner.config import Settings
from stream_learner.errors import StreamLearnerError

SLOTS = 64


class InstanceSlot:
    """A context manager holding the slot; ``id`` is the instance id."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.id = settings.instance_id
        self._fd: int | None = None

    def __enter__(self) -> InstanceSlot:
        if self.id:
            return self  # given: the operator tells instances apart
        host = socket.gethostname()
        s = self.settings
        directory = Path(tempfile.gettempdir()) / f"stream-learner-{os.getuid()}"
        directory.mkdir(mode=0o700, exist_ok=True)
        name = hashlib.sha256(f"{s.redis_url}\0{s.key_prefix}\0{s.model}".encode()).hexdigest()[:20]
        for slot in range(SLOTS):
            fd = os.open(directory / f"{name}.{slot}.lock", os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self._fd = fd
            # A forked checkpoint writer must not keep the slot after its learner died.
            os.register_at_fork(after_in_child=self._close_in_child)
            self.id = host if slot == 0 else f"{host}/{slot}"
            return self
        raise StreamLearnerError(f"model {s.model}: {SLOTS} learners run on this host already; "
                                 "give each an --instance-id")

    def _close_in_child(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __exit__(self, *_exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
