"""What the learner sends for a record besides its dead letter: the champion's prediction, the
challengers' shadow predictions and drift alerts, each unless it was sent already
(consumers/replay.py says what was).

The champion's prediction and each shadow one go to different topics, so a crash can leave one
delivered and not the other: each is guarded apart. Alerts are sent again after a crash (at
least once, consumers/alerts.py), but not twice by one process across its rewinds.
"""

from __future__ import annotations

from consumers import crashpoints
from consumers.alerts import DriftAlerts
from consumers.kafka_io import Publisher
from consumers.replay import Position, ReplayGuard
from consumers.step import Answer
from stream_learner.config import Settings
from stream_learner.engine import Engine
from stream_learner.events import Partition
from stream_learner.observe.board import Board


class Outbox:
    def __init__(self, settings: Settings, publisher: Publisher, guard: ReplayGuard, board: Board) -> None:
        self.shadow_topic = settings.shadow_topic
        self.publisher = publisher
        self.guard = guard
        self.board = board
        self.drift_alerts = DriftAlerts(settings, publisher, board)
        self.sent_alerts: dict[Partition, int] = {}  # the next offset after this process's last alert

    def answer(self, tpk: Partition, where: Position, answer: Answer) -> None:
        """Send the record's prediction and its challengers' shadow predictions."""
        guard = self.guard
        for variant, value in answer[2]:
            if not guard.shadow_sent(tpk, where, variant):
                self.publisher.send(self.shadow_topic, value, key=answer[0].encode())
        if not guard.sent(tpk, where):
            self.publisher.prediction(answer[0], answer[1])
            guard.answer(tpk, where[2])
            if crashpoints.ARMED:
                crashpoints.hit("after_publish")

    def alerts(self, engine: Engine, tpk: Partition, offset: int, *, version: int) -> None:
        """The engine's drift alerts of the record at ``offset``."""
        alerts, engine.alerts = engine.alerts, []
        self.drift_alerts(alerts, task=engine.state.task, version=version,
                          resend=offset >= self.sent_alerts.get(tpk, 0))
        self.sent_alerts[tpk] = max(offset + 1, self.sent_alerts.get(tpk, 0))
        self.board.set(drifts=self.drift_alerts.count)
