"""What the key-scope loops (learner and predictor) share per poll batch: decoding it whole first,
so that its keys' models missing from the cache are read from the store in one request per
partition, and saying once that the store is out while a batch waits for it."""

from __future__ import annotations

import logging

from consumers.clients.base import Record
from consumers.kafka_io import source_of
from stream_learner.errors import InvalidEvent, StoreUnavailable
from stream_learner.events import Event, FieldNames, Limits, decode_event

log = logging.getLogger("stream_learner.keys")

RETRY_S = 1.0  # the wait before a batch goes on while the store is out
Decoded = list[tuple[Record, Event | InvalidEvent]]


def decode_batch(records: list[Record], fields: FieldNames, task: str, limits: Limits
                 ) -> tuple[Decoded, dict[int, list[str]]]:
    """Each record's event (or why it has none), and the keys asked for, by partition."""
    decoded: Decoded = []
    wanted: dict[int, list[str]] = {}
    for record in records:
        try:
            event = decode_event(record.value(), source_of(record), fields, task, limits)
        except InvalidEvent as exc:
            decoded.append((record, exc))
            continue
        decoded.append((record, event))
        if event.key is not None:
            wanted.setdefault(record.partition() or 0, []).append(event.key)
    return decoded, wanted


class StoreOutage:
    """While key models cannot be read: said once when it starts, and once when it ends."""

    def __init__(self) -> None:
        self.out = False

    def failed(self, exc: StoreUnavailable) -> None:
        (log.debug if self.out else log.warning)(
            "cannot read key models now, trying again every %g s: %s", RETRY_S, exc)
        self.out = True

    def answered(self) -> None:
        if self.out:
            log.info("the store answers again")
            self.out = False
