"""Late labels in the pure core, against River's delayed progressive validation."""

from __future__ import annotations

import pytest
from river import datasets, evaluate, linear_model, metrics, preprocessing, stream

from stream_learner.engine import Engine, ModelState
from stream_learner.errors import InvalidEvent
from stream_learner.events import Event, LateLabel, Source
from stream_learner.pending import PendingLabels

SPEC = "preprocessing.StandardScaler() | linear_model.LogisticRegression()"


def engine_with(pending: PendingLabels, default_label: object = None) -> Engine:
    state = ModelState.fresh(SPEC, pending=pending, default_label=default_label)  # type: ignore[arg-type]
    return Engine(state)


def event(i: int | str, x: dict[str, float], ts: float, y: object = None) -> Event:
    return Event(str(i), None, ts, x, y, Source("events", 0, 0))  # type: ignore[arg-type]


def label(i: int | str, y: object, ts: float) -> LateLabel:
    return LateLabel(str(i), y, ts, Source("labels", 0, 0))  # type: ignore[arg-type]


@pytest.mark.parametrize("delay", [1, 25, 300])
def test_delayed_labels_equal_progressive_val_score_with_delay(delay: int) -> None:
    engine = engine_with(PendingLabels(ttl=1e9, max_pending=10_000))
    for seq, (i, x, y) in enumerate(stream.simulate_qa(datasets.Phishing(), moment=None, delay=delay)):
        if y is None:
            engine.process(event(i, x, float(seq)))
        else:
            assert engine.label(label(i, y, float(seq)))
    oracle, accuracy = preprocessing.StandardScaler() | linear_model.LogisticRegression(), metrics.Accuracy()
    evaluate.progressive_val_score(datasets.Phishing(), oracle, accuracy, delay=delay)
    assert engine.state.metrics.cumulative[0].get() == accuracy.get()
    assert engine.state.model["LogisticRegression"].weights == oracle["LogisticRegression"].weights
    assert engine.state.learned == 1250 and engine.state.pending is not None
    assert engine.state.pending.counts["matched"] == 1250 and not engine.state.pending.entries


def test_expiry_late_unknown_and_duplicate_labels_are_counted() -> None:
    pending = PendingLabels(ttl=10.0, max_pending=100)
    engine = engine_with(pending)
    engine.process(event("a", {"f": 1.0}, ts=0.0))
    engine.process(event("b", {"f": 2.0}, ts=5.0))
    assert engine.label(label("b", True, ts=6.0))
    assert not engine.label(label("b", True, ts=7.0))  # a second label: learned once
    engine.process(event("c", {"f": 3.0}, ts=11.0))  # "a" is now older than the TTL
    assert not engine.label(label("a", False, ts=12.0))
    assert not engine.label(label("zz", False, ts=12.0))  # early: kept for its event...
    engine.process(event("d", {"f": 4.0}, ts=30.0))  # ...which never comes within the TTL
    assert pending.counts == {"matched": 1, "early": 1, "late": 1, "unknown": 1, "duplicate": 1,
                              "expired": 2, "evicted": 0}
    assert engine.state.learned == 1 and list(pending.entries) == ["d"]


def test_a_label_before_its_event_is_learned_when_the_event_comes() -> None:
    pending = PendingLabels(ttl=10.0, max_pending=100)
    engine = engine_with(pending)
    assert not engine.label(label("e", True, ts=1.0))
    engine.process(event("e", {"f": 1.0}, ts=2.0))
    assert engine.state.learned == 1 and engine.state.metrics.updates == 1
    assert pending.counts["early"] == 1 and pending.counts["matched"] == 1 and not pending.entries


def test_pending_is_bounded_and_expiry_can_learn_a_default_label() -> None:
    pending = PendingLabels(ttl=1e9, max_pending=1000)
    engine = engine_with(pending, default_label=False)
    for i in range(100_000):
        engine.process(event(i, {"f": float(i % 7)}, ts=float(i)))
        assert len(pending.entries) <= 1000
    assert pending.counts["evicted"] == 99_000
    assert engine.state.learned == 99_000  # each evicted event learned with the default label
    assert engine.state.metrics.updates == 0  # default labels are not scored


def test_a_label_without_pending_support_is_refused() -> None:
    engine = Engine(ModelState.fresh(SPEC))
    with pytest.raises(InvalidEvent, match="unexpected_label"):
        engine.label(label("a", True, 0.0))


def test_waiting_events_are_bounded_by_the_bytes_of_their_features() -> None:
    from stream_learner.pending import Waiting, size_of

    x = {f"feature-{i}": "v" * 1000 for i in range(100)}  # ~110 kB each
    pending = PendingLabels(ttl=1e9, max_pending=100_000, max_bytes=10 * size_of(x))
    for i in range(50):
        pending.add(f"e-{i}", Waiting(x, True, None, float(i)))
    assert len(pending.entries) == 10 and pending.counts["evicted"] == 40
    assert next(iter(pending.entries)) == "e-40" and pending.bytes == 10 * size_of(x)
    assert pending.take("e-45", True, 51.0) is not None
    assert pending.bytes == 9 * size_of(x)
