"""Backtests against River's own prequential loop, and against the learner itself (on the twins)."""

from __future__ import annotations

import dataclasses
import json
import pickle
import threading
from pathlib import Path
from typing import Any

import pytest
from river import datasets, evaluate, metrics, stream

from consumers.clients.memory import MemoryBroker, MemoryClients
from consumers.learner import Learner
from stream_learner.backtest import Item, backtest, jsonl_records
from stream_learner.checkpoint import open_record
from stream_learner.config import Settings
from stream_learner.engine import Engine, ModelState
from stream_learner.errors import ConfigError
from stream_learner.events import Event, LateLabel, Source
from stream_learner.models import build_model
from stream_learner.pending import PendingLabels
from stream_learner.state.memory import MemoryStore
from tests.unit.test_learner_loop import wait_for
from tools.events import dataset_rows, event_bytes

CANDIDATES = {"lr": "preprocessing.StandardScaler() | linear_model.LogisticRegression()",
              "tree": "tree.HoeffdingTreeClassifier(grace_period=50)",
              "slow": "preprocessing.StandardScaler() | linear_model.LogisticRegression(optim.SGD(0.005))"}
BINARY = (metrics.Accuracy, metrics.LogLoss, metrics.F1)
WINDOW = 100


def phishing_records() -> list[Item]:
    return [(raw, Source("events", 0, i)) for i, (_, raw) in enumerate(event_bytes(dataset_rows("Phishing")))]


def river_figures(spec: str, delay: int | None = None, window: int = WINDOW) -> dict[str, float]:
    """River's progressive_val_score of ``spec`` on Phishing for each metric; the rolling ones
    over the last ``window`` predictions River's loop made."""
    out: dict[str, float] = {}
    for kind in BINARY:
        metric = kind()
        evaluate.progressive_val_score(datasets.Phishing(), build_model(spec), metric, delay=delay)
        out[kind.__name__] = metric.get()
    scored = _scored(spec, delay)
    for kind in BINARY:
        metric = kind()
        for y, y_pred, proba in scored[-window:]:
            metric.update(y, y_pred if metric.requires_labels else proba)
        out[f"{kind.__name__}@{window}"] = metric.get()
    return out


def _scored(spec: str, delay: int | None) -> list[tuple[Any, Any, Any]]:
    """(y, predicted class, probabilities) in the order River's loop scores them: the order of
    simulate_qa's answers, each with the prediction made at its question."""
    model, asked, out = build_model(spec), {}, []
    for i, x, y in stream.simulate_qa(datasets.Phishing(), moment=None, delay=delay):
        if y is None:
            proba = model.predict_proba_one(x)
            asked[i] = (max(proba, key=proba.__getitem__) if proba else None, proba)
            continue
        y_pred, proba = asked.pop(i)
        if proba:
            out.append((y, y_pred, proba))
        model.learn_one(x, y)
    return out


def test_without_delay_every_candidate_equals_progressive_val_score() -> None:
    board = backtest(phishing_records(), Settings(rolling_window=WINDOW), CANDIDATES)
    assert {e.name for e in board.entries} == set(CANDIDATES)
    for entry in board.entries:
        assert entry.metrics == river_figures(CANDIDATES[entry.name]), entry.name
        assert (entry.events, entry.learned, entry.dead_letters) == (1250, 1250, {})
        assert entry.scored == len(_scored(CANDIDATES[entry.name], None))  # a tree's first: empty
        assert entry.events_per_s > 0
    # The model's size: River's model after its own loop, pickled (a tree's pickle depends on
    # the order its statistics were made in, so the linear one is compared).
    trained = build_model(CANDIDATES["lr"])
    evaluate.progressive_val_score(datasets.Phishing(), trained, metrics.Accuracy())
    sizes = {e.name: e.model_bytes for e in board.entries}
    assert sizes["lr"] == len(pickle.dumps(trained, protocol=pickle.HIGHEST_PROTOCOL))
    assert sizes["tree"] > 50 * sizes["lr"]
    accuracies = [float(e.metrics["Accuracy"] or 0) for e in board.entries]
    assert board.rank_by == "Accuracy" and board.bigger_is_better
    assert accuracies == sorted(accuracies, reverse=True) and accuracies[0] > accuracies[-1]
    assert [e.rank for e in board.entries] == [1, 2, 3]


@pytest.mark.parametrize("delay", [1, 40])
def test_with_a_delay_every_candidate_equals_simulate_qa(delay: int) -> None:
    board = backtest(phishing_records(), Settings(rolling_window=WINDOW, label_ttl=1e9), CANDIDATES,
                     labels_delay=delay)
    for entry in board.entries:
        spec = CANDIDATES[entry.name]
        assert entry.metrics == river_figures(spec, delay), entry.name
        if delay > 1:  # a delay of one: each label comes before the next event, as without one
            assert entry.metrics != river_figures(spec), entry.name
        assert entry.labels["matched"] == 1250 and entry.learned == 1250
        # The engine fed simulate_qa's sequence, as tests/unit/test_late_labels.py feeds it.
        state = ModelState.fresh(spec, "binary", pending=PendingLabels(ttl=1e9, max_pending=100_000))
        engine = Engine(state)
        for seq, (i, x, y) in enumerate(stream.simulate_qa(datasets.Phishing(), moment=None, delay=delay)):
            if y is None:
                engine.process(Event(str(i), None, float(seq), x, None, Source("events", 0, seq)))
            else:
                assert engine.label(LateLabel(str(i), y, float(seq), Source("labels", 0, seq)))
        assert [entry.metrics[type(m).__name__] for m in state.metrics.cumulative] == \
            [m.get() for m in state.metrics.cumulative]


def test_ranking_respects_smaller_is_better() -> None:
    board = backtest(phishing_records(), Settings(), CANDIDATES, rank_by="LogLoss")
    losses = [float(e.metrics["LogLoss"] or 0) for e in board.entries]
    assert not board.bigger_is_better and losses == sorted(losses) and losses[0] < losses[-1]
    regression = [(json.dumps({"x": {"a": float(i % 7)}, "y": 2.0 * (i % 7)}).encode(), Source("r", 0, i))
                  for i in range(300)]
    board = backtest(regression, Settings(), {"mean": "dummy.StatisticRegressor(stats.Mean())",
                                              "lin": "linear_model.LinearRegression()"})
    assert board.rank_by == "MAE" and not board.bigger_is_better
    assert [e.name for e in board.entries] == ["lin", "mean"]


HOSTILE: list[bytes | None] = [
    b'{"x": {"a": NaN}, "y": true}', b"not json", b'{"y": true}', b'{"x": 3, "y": true}',
    b'{"x": {"a": 1.0}, "y": 2.5}', b'{"x": {"a": 1.0}, "y": "maybe"}', None,
    b'{"x": {"a": 1e300}, "y": true}', b'{"x": {"a": [1]}, "y": true}', b'{"x": {"a": 1.0}, "y": true, ' +
    b'"pad": "' + b"p" * 2000 + b'"}', b'{"x": {"a": 2.0, "boom": 1}, "y": false}',
]


def hostile_stream() -> list[bytes | None]:
    """Phishing's first 300 events with one of each kind of bad event after every 25th, and
    events the fragile model raises on (model_error: the learner rewinds)."""
    rows = event_bytes(dataset_rows("Phishing")[:300])
    out: list[bytes | None] = []
    for i, (_, raw) in enumerate(rows):
        out.append(raw)
        if i % 25 == 24:
            out.append(HOSTILE[(i // 25) % len(HOSTILE)])
    out += HOSTILE
    return out


def learner_on_twins(settings: Settings, values: list[bytes | None]) -> Any:
    """The learner itself on the in-memory Kafka and store, until it has handled every record:
    its last checkpoint."""
    broker, store = MemoryBroker(), MemoryStore()
    broker.create("events")
    for value in values:
        broker.append("events", value)
    learner, stop, failed = Learner(settings, store, MemoryClients(broker)), threading.Event(), []

    def run() -> None:
        try:
            learner.run(stop)
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=run)
    thread.start()

    def handled() -> bool:
        assert not failed, failed
        if not store.versions("m"):
            return False
        return open_record(store.load("m"), settings.signing_keys(), False,
                           settings.trusted_packages()).meta.events >= len(values)

    try:
        wait_for("the learner to handle every record", handled)
    finally:
        stop.set()
        thread.join(30)
    return open_record(store.load("m"), settings.signing_keys(), False, settings.trusted_packages())


def test_invalid_events_are_counted_by_reason_as_the_learner_dead_letters_them() -> None:
    spec = "tests.unit.factories:fragile_logreg"
    settings = Settings(model="m", model_spec=spec, hmac_key="k" * 32, instance_id="twin",
                        events_topic="events", dead_letter_topic="dlq", max_event_bytes=1024,
                        checkpoint_every=50, checkpoint_interval=0.2, progress_interval=3600.0, task="binary",
                        model_packages="tests")
    values = hostile_stream()
    ckpt = learner_on_twins(settings, values)
    records = [(v, Source("events", 0, i)) for i, v in enumerate(values)]
    entry = backtest(records, settings, {"fragile": spec}).entries[0]
    assert entry.dead_letters == dict(sorted(ckpt.meta.dead_letters.items()))
    assert set(entry.dead_letters) >= {"non_finite", "invalid_json", "missing_x", "x_not_object", "bad_label",
                                       "new_class", "not_object", "out_of_range", "bad_feature", "too_large",
                                       "model_error"}
    assert entry.learned == ckpt.state.learned == 300  # the bad events, the boom one too, unlearned
    assert entry.metrics == {**{type(m).__name__: m.get() for m in ckpt.state.metrics.cumulative},
                             **{f"{type(m).__name__}@1000": m.get() for m in ckpt.state.metrics.rolling()}}
    assert entry.model_bytes == len(pickle.dumps(ckpt.state.model, protocol=pickle.HIGHEST_PROTOCOL))


def test_candidates_and_options_are_checked_before_any_event() -> None:
    with pytest.raises(ConfigError, match=r"^--candidate bad: 'os' is not a River module"):
        backtest([], Settings(), {"ok": CANDIDATES["lr"], "bad": "os.system('id')"})
    with pytest.raises(ConfigError, match=r"^--candidate reg: the model does regression"):
        backtest([], Settings(), {"ok": CANDIDATES["lr"], "reg": "linear_model.LinearRegression()"})
    with pytest.raises(ConfigError, match=r"^--rank-by MAE: not a metric of a binary model"):
        backtest([], Settings(), {"ok": CANDIDATES["lr"]}, rank_by="MAE")
    with pytest.raises(ConfigError, match=r"^--candidate: give at least one"):
        backtest([], Settings(), {})
    with pytest.raises(ConfigError, match=r"^--default-label: not a binary label"):
        backtest([], dataclasses.replace(Settings(), default_label="1.5"), {"ok": CANDIDATES["lr"]},
                 labels_delay=3)


def test_a_model_that_never_learns_stops_and_ranks_last() -> None:
    records = [(json.dumps({"x": {"boom": 1, "a": float(i)}, "y": i % 2 == 0}).encode(), Source("t", 0, i))
               for i in range(20)]
    board = backtest(records, Settings(max_model_errors=5, task="binary"),
                     {"fragile": "tests.unit.factories:fragile_logreg", "lr": CANDIDATES["lr"]})
    assert [e.name for e in board.entries] == ["lr", "fragile"]
    fragile = board.entries[1]
    assert fragile.error.startswith("the model raised on 5 events in a row")
    assert fragile.dead_letters == {"model_error": 5} and fragile.learned == 0
    assert board.entries[0].learned == 20


def test_jsonl_records(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"x": {"a": 1.0}, "y": true}\n\n{"x": {"a": 2.0}, "y": false}\r\n')
    records = list(jsonl_records(path))
    assert records == [(b'{"x": {"a": 1.0}, "y": true}', Source("events.jsonl", 0, 1)),
                       (b'{"x": {"a": 2.0}, "y": false}', Source("events.jsonl", 0, 3))]
    with pytest.raises(ConfigError, match=r"^--file .*missing.jsonl: cannot read it: No such file"):
        list(jsonl_records(tmp_path / "missing.jsonl"))
