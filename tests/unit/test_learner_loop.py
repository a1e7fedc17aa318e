"""The whole learning loop on the in-memory twins of the Kafka clients and of the store: its
predictions and its checkpoints equal River's own prequential loop, across a restart."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from river import linear_model, preprocessing

from consumers.clients.memory import MemoryBroker, MemoryClients
from consumers.learner import Learner
from stream_learner.checkpoint import open_record
from stream_learner.config import Settings
from stream_learner.state.memory import MemoryStore
from tools.events import dataset_rows, event_bytes

SPEC = "preprocessing.StandardScaler() | linear_model.LogisticRegression()"
SETTINGS = Settings(model="m", model_spec=SPEC, hmac_key="k" * 32, instance_id="twin",
                    events_topic="events", predictions_topic="predictions", dead_letter_topic="dlq",
                    checkpoint_every=100, progress_interval=3600.0)


def wait_for(what: str, condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def run_until(store: MemoryStore, broker: MemoryBroker, learned: int) -> None:
    """A learner on the twins, until a checkpoint covers ``learned`` events; then stopped."""
    learner = Learner(SETTINGS, store, MemoryClients(broker))
    stop = threading.Event()
    failed: list[BaseException] = []

    def run() -> None:
        try:
            learner.run(stop)
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=run)
    thread.start()

    def covered() -> bool:
        assert not failed, failed
        if not store.versions("m"):
            return False
        return open_record(store.load("m"), SETTINGS.signing_keys()).state.learned >= learned

    try:
        wait_for(f"a checkpoint of {learned} events", covered)
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive() and not failed, failed


def oracle(rows: list[tuple[dict[str, Any], bool]]) -> tuple[list[dict[str, float]], Any]:
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    probas = []
    for x, y in rows:
        probas.append({str(c).lower(): p for c, p in model.predict_proba_one(x).items()})
        model.learn_one(x, y)
    return probas, model


def test_the_loop_on_the_twins_equals_rivers_prequential_loop_across_a_restart() -> None:
    broker, store = MemoryBroker(), MemoryStore()
    broker.create("events")
    rows = dataset_rows("Phishing")[:400]
    for event_id, raw in event_bytes(rows[:300]):
        broker.append("events", raw, event_id.encode())
    run_until(store, broker, 300)
    for event_id, raw in event_bytes(rows[300:], start=300):
        broker.append("events", raw, event_id.encode())
    run_until(store, broker, 400)  # a second learner resumes from the first one's checkpoint

    probas, model = oracle(rows)
    published = [json.loads(r.value() or b"") for part in broker.topics["predictions"] for r in part]
    assert Counter(p["id"] for p in published) == Counter(f"e-{i}" for i in range(400))  # once each
    by_id = {p["id"]: p for p in published}
    assert [by_id[f"e-{i}"]["proba"] for i in range(400)] == probas
    assert [by_id[f"e-{i}"]["learned"] for i in range(400)] == list(range(400))
    saved = open_record(store.load("m"), SETTINGS.signing_keys())
    assert saved.meta.offsets == {"events:0": 400} and saved.state.learned == 400
    assert saved.state.model["LogisticRegression"].weights == model["LogisticRegression"].weights
    assert broker.committed == {("events", 0): 400}  # Kafka heard of the last checkpoint's offsets
