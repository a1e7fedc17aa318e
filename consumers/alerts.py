"""Drift alerts, as they leave the learner: a log line, a count, and a JSON record on
``--alerts-topic``.

An alert names the record whose error made the detector fire (the event, or the late label that
scored it). After a crash or a model error, the records since the last checkpoint are replayed
and the detector, restored with the model, fires at the same records: an alert sent by an earlier
run can be sent again, identical but for ``ts`` (at least once; ``model`` and ``source`` identify it).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from consumers.kafka_io import Publisher
from stream_learner.config import Settings
from stream_learner.engine import Alert
from stream_learner.observe.board import Board

log = logging.getLogger("stream_learner.learner")


def error_kind(task: str) -> str:
    return "absolute error" if task == "regression" else "misclassification (0/1)"


class DriftAlerts:
    def __init__(self, settings: Settings, publisher: Publisher, board: Board) -> None:
        self.settings = settings
        self.publisher = publisher
        self.board = board
        self.count = 0  # alerts raised by this process

    def __call__(self, alerts: list[Alert], *, task: str, version: int, resend: bool = True) -> None:
        """Say each alert; ``resend``: also send it (not when this process sent it already)."""
        s = self.settings
        for alert in alerts:
            self.count += 1
            doc = document(alert, model=s.model, detector=s.drift_detector, task=task, version=version)
            before = "?" if doc["error_before"] is None else f"{doc['error_before']:.4g}"
            started = f"; challenger {alert.challenger} started" if alert.challenger else ""
            log.warning("drift: %s fired at %s (event %s, %d learned): mean error %s before, %.4g after%s",
                        s.drift_detector, doc["source"], doc["id"], alert.learned, before,
                        doc["error_after"], started)
            self.board.mark("drift", f"{s.drift_detector} at {doc['source']} (event {doc['id']}){started}")
            if s.alerts_topic and resend:
                self.publisher.send(s.alerts_topic, json.dumps(doc, sort_keys=True).encode(),
                                    key=s.model.encode())


def document(alert: Alert, *, model: str, detector: str, task: str, version: int) -> dict[str, Any]:
    """The alert as it goes to the alerts topic."""
    source, drift = alert.source, alert.drift
    doc: dict[str, Any] = {
        "model": model, "model_version": version, "detector": detector, "id": drift.event_id,
        "source": f"{source.topic}/{source.partition}/{source.offset}", "topic": source.topic,
        "partition": source.partition, "offset": source.offset, "learned": alert.learned,
        "drifts": drift.count, "error": error_kind(task), "error_before": drift.error_before,
        "error_after": drift.error_after, "ts": time.time(),
    }
    if alert.challenger:
        doc["challenger"] = alert.challenger
    return doc
