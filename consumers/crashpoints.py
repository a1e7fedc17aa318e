"""Named crash points for the fault tests: SIGKILL this process the n-th time one is passed.

Only tests set ``SL_TEST_CRASH_AT`` (e.g. ``after_publish:3``); when it is unset, ``ARMED`` is
False and the call sites skip ``hit`` entirely. Points: after_predict, after_publish,
after_flush (the checkpoint's sends acknowledged), during_checkpoint (state pickled and the
writer released, not yet written; with a forked writer: writing while its parent dies),
after_checkpoint (written, Kafka not yet committed), in_revocation.
"""

from __future__ import annotations

import os
import signal

_name, _, _nth = os.environ.get("SL_TEST_CRASH_AT", "").partition(":")
ARMED = bool(_name)
_remaining = int(_nth or 1)


def hit(name: str) -> None:
    global _remaining
    if name == _name:
        _remaining -= 1
        if _remaining <= 0:
            os.kill(os.getpid(), signal.SIGKILL)
