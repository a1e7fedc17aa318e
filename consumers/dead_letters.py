"""Dead letters: the original bytes of a rejected message, with headers saying why and who.

A copy that would not fit the dead-letter topic (its ``max.message.bytes``, read from the
broker at start) is cut to fit, and the ``truncated`` header gives the original size: a
message near the broker's limit plus our headers would otherwise be refused, and the service
could never get past it. Each rejection is logged once per reason, then summed up every
``SUMMARY_S`` seconds, so that a stream of bad messages does not flood the log.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from consumers.clients.base import Headers
from consumers.kafka_io import Publisher
from stream_learner.errors import InvalidEvent
from stream_learner.events import Source

log = logging.getLogger("stream_learner")

MAX_DETAIL_BYTES = 1000
# Room left in a record for the batch and record framing beside the value and the headers.
FRAMING_BYTES = 512
SUMMARY_S = 10.0


@dataclass(frozen=True)
class Author:
    """Who wrote a dead letter: the model, the mode (``learn`` or ``frozen``) and the instance."""

    model: str
    mode: str
    instance: str


def detail_header(detail: str) -> bytes:
    """The detail as UTF-8, cut to ``MAX_DETAIL_BYTES`` at a character boundary."""
    return detail.encode(errors="replace")[:MAX_DETAIL_BYTES].decode(errors="ignore").encode()


def headers_for(error: InvalidEvent, source: Source, author: Author, version: int) -> Headers:
    cause = error.__cause__ or error
    return [
        ("reason", error.reason.encode()),
        ("detail", detail_header(error.detail)),
        ("source.topic", source.topic.encode()),
        ("source.partition", str(source.partition).encode()),
        ("source.offset", str(source.offset).encode()),
        ("exception", type(cause).__name__.encode()),
        ("model", author.model.encode()),
        ("mode", author.mode.encode()),
        ("model_version", str(version).encode()),
        ("instance", author.instance.encode()),
    ]


def fit(raw: bytes | None, headers: Headers, max_bytes: int) -> tuple[bytes | None, Headers]:
    """The value and headers of a record of at most ``max_bytes``: ``raw`` whole, or cut, with a
    ``truncated`` header giving its original size.

    >>> value, headers = fit(b"x" * 2000, [("reason", b"too_large")], max_bytes=1600)
    >>> len(value), headers[-1]
    (1060, ('truncated', b'2000'))
    """
    if raw is None:
        return None, headers  # a tombstone stays a tombstone
    used = sum(len(k) + len(v or b"") for k, v in headers) + FRAMING_BYTES
    if len(raw) + used <= max_bytes:
        return raw, headers
    marked: Headers = [*headers, ("truncated", str(len(raw)).encode())]
    room = max(0, max_bytes - used - len("truncated") - len(marked[-1][1] or b""))
    return raw[:room], marked


class DeadLetters:
    """Counts rejections by reason and sends their dead letters through a ``Publisher``."""

    def __init__(self, publisher: Publisher, *, topic: str, author: Author, max_bytes: int) -> None:
        self.publisher = publisher
        self.topic = topic
        self.author = author
        self.max_bytes = max_bytes
        self.counts: dict[str, int] = {}  # reason -> rejections
        self._logged: set[str] = set()
        self._since: dict[str, int] = {}  # not yet in a summary
        self._summary_at = time.monotonic() + SUMMARY_S

    def count(self, error: InvalidEvent, source: Source) -> None:
        """Count (and log) a rejection, whether or not its dead letter is sent now."""
        reason = error.reason
        self.counts[reason] = self.counts.get(reason, 0) + 1
        if reason not in self._logged:
            self._logged.add(reason)
            log.warning("dead letter %s: %s (further %s dead letters are summed up every %g s)",
                        source, error, reason, SUMMARY_S)
        else:
            self._since[reason] = self._since.get(reason, 0) + 1
        self.summarise()

    def send(self, raw: bytes | None, error: InvalidEvent, source: Source, version: int) -> None:
        """To the topic, if there is one (a frozen predictor not told of one writes none)."""
        if not self.topic:
            return
        value, headers = fit(raw, headers_for(error, source, self.author, version), self.max_bytes)
        self.publisher.send(self.topic, value, headers=headers)

    def summarise(self, force: bool = False) -> None:
        """Log the dead letters not logged yet, once ``SUMMARY_S`` seconds have passed since
        the last summary (``force``: now); the loops ask every pass."""
        if not self._since:
            return
        now = time.monotonic()
        if force or now >= self._summary_at:
            parts = ", ".join(f"{r} {n}" for r, n in sorted(self._since.items()))
            log.warning("dead-lettered %d more events: %s", sum(self._since.values()), parts)
            self._since.clear()
        if now >= self._summary_at:
            self._summary_at = now + SUMMARY_S
