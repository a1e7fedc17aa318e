"""The continually-learning consumer on real Kafka and Redis, checked against exact oracles."""

from __future__ import annotations

import json
import logging
import math
import pickle
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest
from kafka import KafkaConsumer, TopicPartition
from river import evaluate, linear_model, metrics, preprocessing

from consumers.learner import Learner
from stream_learner.checkpoint import Record, read_meta, seal_payload
from stream_learner.config import Settings
from tests.integration.helpers import (
    KEY,
    InThread,
    kafka_clients,
    latest_meta,
    load_checkpoint,
    make_settings,
    phishing,
    produce,
    read_all,
    read_topic,
    spawn,
    store_for,
    wait_for,
    wait_learned,
)
from tools.events import event_bytes
from tools.localstack import KafkaBroker, RedisServer

SPEC = "preprocessing.StandardScaler() | linear_model.LogisticRegression()"


def river_model() -> Any:
    return preprocessing.StandardScaler() | linear_model.LogisticRegression()


def same_model(a: Any, b: Any, rows: list[tuple[dict[str, Any], Any]]) -> None:
    """Same parameters and the same predictions on every row."""
    assert a["LogisticRegression"].weights == b["LogisticRegression"].weights
    assert a["LogisticRegression"].intercept == b["LogisticRegression"].intercept
    for x, _ in rows:
        assert a.predict_proba_one(x) == b.predict_proba_one(x)


@pytest.mark.parametrize("busy_poll_ms", [0.0, 2.0], ids=["blocking-poll", "busy-poll"])
def test_service_metric_and_model_equal_river_on_phishing(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
    topic: Callable[..., str], busy_poll_ms: float, kafka_client: str,
) -> None:
    rows = phishing()
    settings = make_settings(kafka, redis_server, unique, events_topic=topic("events"), model_spec=SPEC,
                             busy_poll_ms=busy_poll_ms, kafka_client=kafka_client)
    produce(kafka.bootstrap, settings.events_topic, event_bytes(rows))

    learner = InThread(Learner(settings, store_for(settings), kafka_clients(settings)))
    wait_learned(settings, len(rows))
    learner.stop()

    oracle, accuracy = river_model(), metrics.Accuracy()
    evaluate.progressive_val_score(dataset=rows, model=oracle, metric=accuracy)
    ckpt = load_checkpoint(settings)
    service_accuracy = ckpt.state.metrics.cumulative[0]
    assert type(service_accuracy).__name__ == "Accuracy"
    assert service_accuracy.get() == accuracy.get()
    assert f"{service_accuracy}" == f"{accuracy}"  # to the printed digits: "Accuracy: 89.28%"
    assert ckpt.meta.learned == len(rows)
    assert ckpt.meta.offsets == {f"{settings.events_topic}:0": len(rows)}
    same_model(ckpt.state.model, oracle, rows)

    # Every published prediction is the one the model made before learning that event.
    published = [m.json() for m in read_topic(kafka.bootstrap, settings.predictions_topic, len(rows))]
    replay = river_model()
    for i, ((x, y), pred) in enumerate(zip(rows, published, strict=True)):
        proba = replay.predict_proba_one(x)
        assert pred["id"] == f"e-{i}" and pred["learned"] == i and pred["mode"] == "learn"
        assert pred["prediction"] == max(proba, key=proba.__getitem__)
        assert math.isclose(pred["proba"]["true"], proba[True], rel_tol=0, abs_tol=0)
        replay.learn_one(x, y)


def test_sigterm_halfway_then_restart_equals_uninterrupted(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
    topic: Callable[..., str],
) -> None:
    rows = phishing()
    half = len(rows) // 2
    settings = make_settings(kafka, redis_server, unique, events_topic=topic("events"),
                             checkpoint_every=100)
    messages = event_bytes(rows)
    produce(kafka.bootstrap, settings.events_topic, messages[:half])

    first = spawn("learn", settings)
    wait_learned(settings, half)
    first.send_signal(signal.SIGTERM)
    out, _ = first.communicate(timeout=60)
    assert first.returncode == 0, out
    assert "checkpoint" in out

    produce(kafka.bootstrap, settings.events_topic, messages[half:])
    second = spawn("learn", settings)
    try:
        wait_learned(settings, len(rows))
    finally:
        second.send_signal(signal.SIGTERM)
        out, _ = second.communicate(timeout=60)
    assert "resumed v" in out and f"({half} learned)" in out, out

    ckpt = load_checkpoint(settings)
    assert ckpt.meta.learned == ckpt.state.learned == len(rows)
    listing = spawn("models", settings, "list")
    out, _ = listing.communicate(timeout=60)
    assert listing.returncode == 0, out
    latest = out.strip().splitlines()[-1]
    assert latest.startswith(f"v{ckpt.meta.version}  ") and f"learned {len(rows)}" in latest
    assert f"{settings.events_topic}:0={len(rows)}" in latest and "signature verified" in latest
    assert KEY not in out

    uninterrupted = river_model()
    for x, y in rows:
        uninterrupted.learn_one(x, y)
    same_model(ckpt.state.model, uninterrupted, rows)


def test_bad_input_is_dead_lettered_and_the_model_learns_only_good_events(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
    topic: Callable[..., str], tmp_path: Path,
) -> None:
    rows = phishing()[:1000]
    good = event_bytes(rows)
    bad: list[tuple[str, bytes]] = [
        ("invalid_json", b'{"x": {"a": 1'),
        ("non_finite", b'{"x": {"empty_server_form_handler": NaN}, "y": true}'),
        ("non_finite", b'{"x": {"empty_server_form_handler": Infinity}, "y": true}'),
        ("non_finite", b'{"x": {"empty_server_form_handler": 1e999}, "y": false}'),
        ("missing_x", b'{"y": true}'),
        ("x_not_object", b'{"x": [1, 2], "y": true}'),
        ("bad_label", b'{"x": {"ip_in_url": 1}, "y": 0.5}'),
        ("bad_label", b'{"x": {"ip_in_url": 1}, "y": {"a": 1}}'),
        ("new_class", b'{"x": {"ip_in_url": 1}, "y": "maybe"}'),
        ("not_object", b'[1, 2, 3]'),
        ("not_utf8", b'\xff\xfe{"x": {}}'),
        ("too_large", json.dumps({"x": {"pad": "p" * (2 * 1024 * 1024)}, "y": True}).encode()),
    ]
    # One bad message after every 80 good ones, the rest at the end.
    stream: list[tuple[str | None, bytes]] = []
    pending = list(bad)
    for i, message in enumerate(good):
        stream.append(message)
        if i % 80 == 40 and pending:
            stream.append((None, pending.pop(0)[1]))
    stream.extend((None, value) for _, value in pending)
    expected_bad = {value: reason for reason, value in bad}

    settings = make_settings(kafka, redis_server, unique, events_topic=topic("events"))
    produce(kafka.bootstrap, settings.events_topic, stream)
    learner = InThread(Learner(settings, store_for(settings), kafka_clients(settings)))
    wait_learned(settings, len(rows))
    learner.stop()

    letters = read_topic(kafka.bootstrap, settings.dead_letter_topic, len(expected_bad))
    assert len(letters) == len(expected_bad)
    for letter in letters:
        assert letter.headers["reason"].decode() == expected_bad[letter.value]
        assert letter.headers["source.topic"].decode() == settings.events_topic
        assert letter.headers["source.partition"] == b"0"
        source_offset = int(letter.headers["source.offset"])
        assert stream[source_offset][1] == letter.value
        assert letter.headers["exception"]

    ckpt = load_checkpoint(settings)
    assert ckpt.meta.learned == len(rows)
    assert ckpt.meta.offsets == {f"{settings.events_topic}:0": len(stream)}
    assert ckpt.meta.dead_letters == dict(Counter(expected_bad.values()))
    only_good = river_model()
    for x, y in rows:
        only_good.learn_one(x, y)
    same_model(ckpt.state.model, only_good, rows)
    weights = ckpt.state.model["LogisticRegression"].weights
    assert all(math.isfinite(w) for w in weights.values())


def test_tampered_checkpoint_is_refused_and_never_unpickled(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
    topic: Callable[..., str], tmp_path: Path,
) -> None:
    settings = make_settings(kafka, redis_server, unique, events_topic=topic("events"))
    produce(kafka.bootstrap, settings.events_topic, event_bytes(phishing()[:200]))
    learner = InThread(Learner(settings, store_for(settings), kafka_clients(settings)))
    meta = wait_learned(settings, 200)
    learner.stop()

    store = store_for(settings)
    key = store.key(settings.model, f"v:{meta.version}")
    marker = tmp_path / "unpickled"
    evil = pickle.dumps(_WritesMarker(str(marker)))
    original = cast(dict[Any, Any], store.client.hgetall(key))

    # Someone who holds the key signs the evil pickle: the class allow-list still refuses it.
    resigned = seal_payload(read_meta(Record(original[b"header"], b"", "")), evil, KEY.encode())
    cases: list[tuple[dict[Any, Any], str]] = [
        ({b"payload:0": evil}, "signature does not match"),
        ({b"signature": b"0" * 64}, "signature does not match"),
        ({b"header": original[b"header"].replace(b'"learned":200', b'"learned":999')},
         "signature does not match"),
        ({b"payload:0": evil, b"signature": resigned.signature.encode()}, "forbidden class io.open"),
    ]
    for change, reason in cases:
        store.client.hset(key, mapping={**original, **change})
        for command in ("learn", "serve"):
            proc = spawn(command, settings)
            out, _ = proc.communicate(timeout=60)
            assert proc.returncode == 1, (change.keys(), command, out)
            assert "IntegrityError" in out and reason in out, out
            assert "Traceback" not in out
            assert not marker.exists()
    store.close()


class _WritesMarker:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def test_invalid_settings_fail_before_any_io(kafka: KafkaBroker, redis_server: RedisServer,
                                            unique: Callable[[str], str]) -> None:
    settings: Settings = make_settings(kafka, redis_server, unique, model_spec="linear_model.Nope()")
    proc = spawn("learn", settings)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "--model-spec" in out and "Nope" in out and "Traceback" not in out


def test_a_model_that_raises_mid_update_is_rewound_not_left_half_updated(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
    topic: Callable[..., str],
) -> None:
    from tests.unit.factories import fragile_logreg

    rows = phishing()[:400]
    messages = event_bytes(rows)
    boom = json.dumps({"id": "boom", "x": {**rows[0][0], "boom": 1}, "y": True}).encode()
    stream = [*messages[:250], ("boom", boom), *messages[250:]]
    settings = make_settings(kafka, redis_server, unique, events_topic=topic("events"),
                             model_spec="tests.unit.factories:fragile_logreg", checkpoint_every=100)
    produce(kafka.bootstrap, settings.events_topic, stream)
    learner = InThread(Learner(settings, store_for(settings), kafka_clients(settings)))
    wait_for("every event to be checkpointed",
             lambda: (m := latest_meta(settings)) is not None and sum(m.offsets.values()) == len(stream))
    learner.stop()

    [letter] = read_topic(kafka.bootstrap, settings.dead_letter_topic, 1)
    assert letter.value == boom and letter.headers["reason"] == b"model_error"
    assert letter.headers["exception"] == b"ValueError" and letter.headers["source.offset"] == b"250"
    ckpt = load_checkpoint(settings)
    oracle = fragile_logreg()
    for x, y in rows:
        oracle.learn_one(x, y)
    assert ckpt.meta.learned == len(rows)
    assert ckpt.state.model["Fragile"].seen == oracle["Fragile"].seen == len(rows)
    assert ckpt.state.model["LogisticRegression"].weights == oracle["LogisticRegression"].weights
    predicted = Counter(m.json()["id"] for m in read_all(kafka.bootstrap, settings.predictions_topic))
    assert predicted == Counter(f"e-{i}" for i in range(len(rows)))  # the replay published nothing twice


def test_kafka_hears_of_each_checkpoint_s_offsets_for_lag_monitoring(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
    topic: Callable[..., str],
) -> None:
    rows = phishing()
    settings = make_settings(kafka, redis_server, unique, events_topic=topic("events"), commit_interval=0.3)
    partition = TopicPartition(settings.events_topic, 0)
    group = KafkaConsumer(bootstrap_servers=kafka.bootstrap, group_id=settings.consumer_group("learn"),
                          enable_auto_commit=False)
    try:
        learner = InThread(Learner(settings, store_for(settings), kafka_clients(settings)))
        for start, learned in ((0, 300), (300, 450)):
            produce(kafka.bootstrap, settings.events_topic, event_bytes(rows[start:learned], start=start))
            wait_learned(settings, learned)
            wait_for(f"the group's offset to reach {learned}",
                     lambda n=learned: group.committed(partition) == n)  # type: ignore[misc]
        learner.stop()
        assert load_checkpoint(settings).meta.offsets == {f"{settings.events_topic}:0": 450}
        assert group.committed(partition) == 450
    finally:
        group.close(autocommit=False)


@pytest.mark.parametrize("inline_bytes, writer", [(Settings().checkpoint_inline_bytes, "pickled in the loop"),
                                                  (1000, "forked"), (0, "forked")],
                         ids=["small", "large", "never-inline"])
def test_a_model_is_pickled_in_the_loop_if_it_pickles_within_the_limit_and_forked_if_not(
    inline_bytes: int, writer: str, kafka: KafkaBroker, redis_server: RedisServer,
    unique: Callable[[str], str], topic: Callable[..., str], caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="stream_learner.learner")
    rows = phishing()
    settings = make_settings(kafka, redis_server, unique, events_topic=topic("events"), model_spec=SPEC,
                             checkpoint_every=100, checkpoint_interval=0.3,
                             checkpoint_inline_bytes=inline_bytes)  # ours pickles to ~30 KB
    learner = InThread(Learner(settings, store_for(settings), kafka_clients(settings)))
    for start in range(0, len(rows), 250):  # in rounds, so that there are several checkpoints
        chunk = rows[start:start + 250]
        produce(kafka.bootstrap, settings.events_topic, event_bytes(chunk, start=start))
        wait_learned(settings, start + len(chunk))
    learner.stop()

    writers = re.findall(r"\(interval\): .* loop blocked [\d.]+ ms \((forked|pickled in the loop)\)",
                         caplog.text)
    assert len(writers) >= 4 and set(writers) == {writer}, writers
    oracle = river_model()
    for x, y in rows:
        oracle.learn_one(x, y)
    same_model(load_checkpoint(settings).state.model, oracle, rows)


def test_a_changed_spec_is_refused_and_models_reset_starts_the_model_afresh(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
    topic: Callable[..., str],
) -> None:
    rows = phishing()[:200]
    settings = make_settings(kafka, redis_server, unique, events_topic=topic("events"), model_spec=SPEC)
    produce(kafka.bootstrap, settings.events_topic, event_bytes(rows))
    first = spawn("learn", settings)
    wait_learned(settings, len(rows))

    def start(command: str, *args: str, omit: tuple[str, ...] = (), **overrides: Any
              ) -> subprocess.Popen[str]:
        return spawn(command, replace(settings, **overrides), *args, omit=omit)

    def result(proc: subprocess.Popen[str]) -> tuple[int, str]:
        out, _ = proc.communicate(timeout=120)
        return proc.returncode, out

    def cli(command: str, *args: str, **overrides: Any) -> tuple[int, str]:
        return result(start(command, *args, **overrides))

    # Commands that change nothing run side by side (each CLI start-up costs a second or two).
    unconfirmed, refused = start("models", "reset"), start("models", "reset", "--yes")
    code, out = result(unconfirmed)
    assert code == 2 and "add --yes" in out
    code, out = result(refused)
    assert code == 1 and "holds the writer lease; stop it first" in out and "Traceback" not in out
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=60)

    other = "tree.HoeffdingTreeClassifier()"
    changed = start("learn", model_spec=other)
    listing = start("models", "list", omit=("model",))
    missing = start("models", "show", "999")
    code, out = result(changed)
    last = out.strip().splitlines()[-1]
    assert code == 2, out
    assert SPEC in last and other in last and "--model" in last and "models reset --model" in last
    code, out = result(listing)
    assert code == 0 and out.startswith(f"{settings.model}  v"), out
    code, out = result(missing)
    assert code == 1 and "has no version 999; the store keeps v" in out

    code, out = cli("models", "reset", "--yes")
    assert code == 0 and "deleted" in out, out
    fresh = spawn("learn", replace(settings, model_spec=other))
    try:
        meta = wait_learned(settings, len(rows))
    finally:
        fresh.send_signal(signal.SIGTERM)
        fresh.communicate(timeout=60)
    assert meta.spec == other and meta.version >= 1


def test_the_learner_says_what_it_is_doing_and_when_it_is_caught_up(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
    topic: Callable[..., str], caplog: pytest.LogCaptureFixture,
) -> None:
    rows = phishing()
    settings = make_settings(kafka, redis_server, unique, events_topic=topic("events"), progress_interval=1.0,
                             max_poll_records=50, busy_poll_ms=0.0)
    caplog.set_level(logging.INFO, logger="stream_learner.learner")

    def said(text: str) -> list[str]:
        return [r.getMessage() for r in caplog.records if text in r.getMessage()]

    produce(kafka.bootstrap, settings.events_topic, event_bytes(rows))
    learner = InThread(Learner(settings, store_for(settings), kafka_clients(settings)))
    wait_learned(settings, len(rows))
    wait_for("an idle line", lambda: said("idle, caught up"))
    since = time.monotonic()
    wait_for("three more progress intervals", lambda: time.monotonic() - since > 3, timeout=5)
    idle = said("idle, caught up")
    learner.stop()
    assert re.fullmatch(r"idle, caught up \(lag 0\): 1250 learned, model v\d+", idle[-1]), idle
    assert len(idle) == 1, "idle is said once, not every interval"
    busy = said("events/s")
    assert busy and re.search(r"\d+ events/s, \d+ learned, 0 dead letters, lag \d+, model v\d+, "
                              r"Accuracy@1000 0\.\d+", busy[0]), busy
