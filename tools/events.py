"""River's bundled datasets as the service's events, for the bench, the demo and the tests.

An event is the JSON document ``{"id": ..., "x": {...}, "y": ...}`` (``y`` left out when the
event is unlabelled), encoded as UTF-8: what ``stream-learner learn`` and ``serve`` read.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from typing import Any

Row = tuple[dict[str, Any], Any]


def dataset_rows(name: str) -> list[Row]:
    """The rows of River's dataset ``name`` (``"Phishing"``), as the service sees them: the
    features through a JSON round trip, so that they compare equal to what it decodes."""
    from river import datasets

    return [(json.loads(json.dumps(x, default=float)), y) for x, y in getattr(datasets, name)()]


def event_bytes(rows: Iterable[Row], prefix: str = "e", start: int = 0,
                labelled: bool = True) -> list[tuple[str, bytes]]:
    """(id, event) for each row, the ids ``<prefix>-<n>`` counting from ``start``; without the
    label unless ``labelled``. Numbers JSON cannot encode (NumPy's) are written as floats."""
    out = []
    for i, (x, y) in enumerate(rows, start):
        doc: dict[str, Any] = {"id": f"{prefix}-{i}", "x": x}
        if labelled:
            doc["y"] = y
        out.append((doc["id"], json.dumps(doc, default=float).encode()))
    return out


def dataset_events(name: str, count: int, prefix: str = "e") -> list[tuple[str, bytes]]:
    """``count`` labelled events of dataset ``name``, its rows repeated as often as it takes,
    the ids ``<prefix>-0`` onwards."""
    return event_bytes(itertools.islice(itertools.cycle(dataset_rows(name)), count), prefix)


def keyed_event_bytes(rows: Iterable[Row], keys: int, prefix: str = "e", seed: int = 7
                      ) -> list[tuple[str, str, bytes]]:
    """(key, id, event) for each row, each event given one of ``keys`` keys (``k-<n>``) at
    random (seeded), so that keys see different numbers of events in no pattern."""
    import random

    pick = random.Random(seed)
    out = []
    for i, (x, y) in enumerate(rows):
        key = f"k-{pick.randrange(keys)}"
        doc = {"id": f"{prefix}-{i}", "key": key, "x": x, "y": y}
        out.append((key, doc["id"], json.dumps(doc, default=float).encode()))
    return out
