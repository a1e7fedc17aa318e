"""An operator's request to a model's learner, left in the store by ``stream-learner models``.

The learner reads it when it next checkpoints, applies it to the state it checkpoints, and
records it in the model's history under its id: a request is applied once, whatever the
restarts, and one that cannot be applied is recorded as refused, with the reason.

>>> r = Request.new("promote", challenger="b", reason="looks better")
>>> decode_request(r.encode()) == r
True
>>> decode_request(b'{"id": 1}')
Traceback (most recent call last):
...
ValueError: the request is not one stream-learner models writes: {"id": 1}
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass

ACTIONS = ("promote", "rollback")
MAX_REQUEST_BYTES = 64 * 1024


@dataclass(frozen=True)
class Request:
    id: str
    action: str
    challenger: str = ""  # promote: the challenger
    reason: str = ""
    at: float = 0.0
    version: int = 0  # rollback: the version to go on from

    @classmethod
    def new(cls, action: str, *, challenger: str = "", reason: str = "", version: int = 0) -> Request:
        return cls(uuid.uuid4().hex, action, challenger, reason, time.time(), version)

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()


def decode_request(raw: bytes) -> Request:
    """The request in ``raw``; ``ValueError`` when it is not one (someone wrote the key by hand)."""
    shown = raw[:200].decode(errors="replace")
    if len(raw) > MAX_REQUEST_BYTES:
        raise ValueError(f"the request is {len(raw)} bytes, more than a request is")
    try:
        doc = json.loads(raw)
        request = Request(**doc)
    except (ValueError, TypeError):
        raise ValueError(f"the request is not one stream-learner models writes: {shown}") from None
    fields = (request.id, request.action, request.challenger, request.reason)
    if (not all(isinstance(v, str) for v in fields) or not isinstance(request.at, int | float)
            or type(request.version) is not int):
        raise ValueError(f"the request is not one stream-learner models writes: {shown}")
    if request.action not in ACTIONS:
        raise ValueError(f"unknown action {request.action!r} in the request")
    return request
