"""Key scope on the real stack: a model per key, owned by partition, exactly once.

The oracle: for every key, a River model trained in-process on that key's events alone, in the
same order. The learners are real processes in one consumer group; they are SIGKILLed, paused
past their partitions' ownership, joined by a third and left by it."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from river import linear_model, metrics, preprocessing

from consumers.key_learner import KeyLearner
from stream_learner.cli import main
from stream_learner.config import Settings
from stream_learner.engine import id_hash
from stream_learner.key_records import key_slot, open_key, open_partition
from stream_learner.keyed import KeyModel, PartitionState
from stream_learner.state.keyed_redis import RedisKeyedStore
from tests.integration.helpers import (
    InThread,
    kafka_clients,
    make_settings,
    phishing,
    produce,
    read_all,
    wait_for,
)
from tests.integration.test_chaos import Feeder
from tests.integration.test_http import Samples, samples, value
from tools.events import keyed_event_bytes
from tools.http import call
from tools.localstack import KafkaBroker, RedisServer, free_port
from tools.service import service_env, spawn, stop

PARTITIONS = 3
SESSION_S = 4.0  # a learner that stops heartbeating loses its partitions after this
Stream = list[tuple[str, str, bytes]]  # (key, id, event)


def key_settings(kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
                 topic: Callable[..., str], **overrides: Any) -> Settings:
    return make_settings(kafka, redis_server, unique, **{
        "events_topic": topic("events", partitions=PARTITIONS), "model_scope": "key", "checkpoint_every": 200,
        "checkpoint_interval": 0.3, "session_timeout": SESSION_S, **overrides})


def start(settings: Settings, log: Path, command: str = "learn") -> subprocess.Popen[bytes]:
    return spawn(command, service_env(settings), stdout=log, append=True)


def partitions(settings: Settings) -> dict[int, tuple[Any, PartitionState]]:
    store = RedisKeyedStore.for_settings(settings)
    out = {}
    for p in range(PARTITIONS):
        record = store.partition(settings.model, p)
        if record is not None:
            out[p] = open_partition(record, settings.signing_keys())
    return out


def covered(settings: Settings) -> int:
    """Events the partitions' checkpoints cover."""
    return sum(sum(meta.offsets.values()) for meta, _ in partitions(settings).values())


def key_models(settings: Settings) -> dict[str, tuple[int, KeyModel]]:
    """Every key's model in the store, with its partition."""
    store = RedisKeyedStore.for_settings(settings)
    out = {}
    for p in range(PARTITIONS):
        names = store.key_names(settings.model, p)
        for name, blob in zip(names, store.key_models(settings.model, p, names), strict=True):
            assert blob is not None
            slot = key_slot(settings.model, p, name)
            out[name] = (p, open_key(blob, slot=slot, keys=settings.signing_keys()))
    return out


def check_against_the_oracle(settings: Settings, stream: Stream, *, published: bool = True) -> None:
    """Each key's model in the store learned each of its events once and equals River's model
    of that key's events alone; with ``published``, each prediction equals River's too."""
    models: dict[str, Any] = {}
    counts: dict[str, int] = {}
    digests: dict[str, int] = {}
    probas: dict[str, dict[Any, float]] = {}
    for key, event_id, raw in stream:
        x, y = _parse(raw)
        model = models.setdefault(key, preprocessing.StandardScaler() | linear_model.LogisticRegression())
        probas[event_id] = {str(c).lower(): p for c, p in model.predict_proba_one(x).items()}
        model.learn_one(x, y)
        counts[key] = counts.get(key, 0) + 1
        digests[key] = (digests.get(key, 0) + id_hash(event_id)) % 2**64
    stored = key_models(settings)
    assert set(stored) == set(models)
    for key, (_, found) in stored.items():
        assert (found.learned, found.digest) == (counts[key], digests[key]), key
        assert found.model["LogisticRegression"].weights == models[key]["LogisticRegression"].weights
    parts = partitions(settings)
    assert sum(meta.learned for meta, _ in parts.values()) == len(stream)
    if published:
        sent = [m.json() for m in read_all(settings.bootstrap_servers, settings.predictions_topic)]
        assert {doc["id"] for doc in sent} == set(probas)
        # A prediction sent again after a crash is the same prediction.
        assert [doc["proba"] for doc in sent] == [probas[doc["id"]] for doc in sent]


def _parse(raw: bytes) -> tuple[dict[str, Any], Any]:
    doc = json.loads(raw)
    return doc["x"], doc["y"]


def test_every_keys_predictions_and_model_equal_rivers_on_that_keys_events_alone(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
    topic: Callable[..., str], tmp_path: Path,
) -> None:
    port = free_port()
    settings = key_settings(kafka, redis_server, unique, topic, key_cache_size=8, http_port=port,
                            key_metrics=("k-3", "k-11"))
    stream = keyed_event_bytes(phishing(), keys=25)
    produce(kafka.bootstrap, settings.events_topic, [(k, raw) for k, _, raw in stream])
    learner = start(settings, tmp_path / "learner.log")
    models: dict[str, Any] = {}
    accuracy, own = metrics.Accuracy(), {k: metrics.Accuracy() for k in settings.key_metrics}
    for key, _, raw in stream:  # prequential over all keys: each key by its own model
        x, y = _parse(raw)
        model = models.setdefault(key, preprocessing.StandardScaler() | linear_model.LogisticRegression())
        y_pred = model.predict_one(x)
        accuracy.update(y, y_pred)
        if key in own:
            own[key].update(y, y_pred)
        model.learn_one(x, y)
    try:
        wait_for("every event checkpointed", lambda: covered(settings) == len(stream), timeout=120, every=0.2)
        versions = {str(p): meta.version for p, (meta, _) in partitions(settings).items()}

        def exported() -> Samples | None:
            figures = samples(f"http://127.0.0.1:{port}")
            shown = {dict(labels)["partition"]: v for (name, labels), v in figures.items()
                     if name == "stream_learner_partition_version"}
            return figures if shown == versions else None

        figures = wait_for("the partitions' versions on /metrics", exported, timeout=30, every=0.3)
        status, body = call(f"http://127.0.0.1:{port}/api/status")
        assert status == 200, body  # the dashboard's feed
        doc = json.loads(body)
        assert [p["partition"] for p in doc["partitions"]] == list(range(PARTITIONS))
        assert doc["keys"]["created"] == 25 and doc["ready"]
    finally:
        stop(learner)
    assert learner.returncode == 0, (tmp_path / "learner.log").read_text()[-3000:]
    check_against_the_oracle(settings, stream)
    assert sorted(partitions(settings)) == list(range(PARTITIONS))
    assert value(figures, "stream_learner_prequential", metric="Accuracy", window="all") == round(
        accuracy.get(), 6)
    assert value(figures, "stream_learner_key_events_total", event="created") == 25
    assert value(figures, "stream_learner_key_events_total", event="evicted") > 0  # 25 keys, 8 cached
    assert 0 < value(figures, "stream_learner_key_cache_hit_ratio") < 1
    for key, oracle in own.items():
        assert value(figures, "stream_learner_key_prequential", key=key, metric="Accuracy",
                     window="all") == round(oracle.get(), 6)
    for p in versions:
        assert value(figures, "stream_learner_partition_checkpoint_bytes", partition=p) > 0


def test_a_paused_learner_writes_nothing_when_it_wakes_and_models_reset_starts_the_model_afresh(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
    topic: Callable[..., str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    settings = key_settings(kafka, redis_server, unique, topic)
    stream = keyed_event_bytes(phishing()[:900], keys=20)
    # The paused one has learned events it has not checkpointed yet when it is paused.
    patient = replace(settings, checkpoint_every=100_000, checkpoint_interval=3600.0)
    produce(kafka.bootstrap, settings.events_topic, [(k, raw) for k, _, raw in stream[:600]])
    zombie_log = tmp_path / "zombie.log"
    zombie = start(patient, zombie_log)
    other = None
    try:
        wait_for("the first learner's predictions", timeout=60, every=0.2,
                 condition=lambda: len(read_all(kafka.bootstrap, settings.predictions_topic)) >= 600)
        os.kill(zombie.pid, signal.SIGSTOP)
        other = start(settings, tmp_path / "other.log")
        # The other learns past what the paused one knows: a write of the paused one's state would
        # take back the keys' later events, and the partitions' offsets with them.
        produce(kafka.bootstrap, settings.events_topic, [(k, raw) for k, _, raw in stream[600:]])
        wait_for("the second learner to checkpoint every event", timeout=60, every=0.2,
                 condition=lambda: covered(settings) == len(stream))
        tokens = {p: meta.token for p, (meta, _) in partitions(settings).items()}
        os.kill(zombie.pid, signal.SIGCONT)
        wait_for("the woken learner to be refused", timeout=60, every=0.2,
                 condition=lambda: "another learner owns it now" in zombie_log.read_text())
        wait_for("the woken learner to rejoin", timeout=60, every=0.2,
                 condition=lambda: zombie_log.read_text().count("assigned") >= 2)
    finally:
        os.kill(zombie.pid, signal.SIGCONT)
        stop(zombie)
        if other is not None:
            stop(other)
    assert covered(settings) == len(stream)
    assert all(meta.token >= tokens[p] for p, (meta, _) in partitions(settings).items())
    check_against_the_oracle(settings, stream, published=False)
    models_list_and_reset(settings, stream, tmp_path, capsys)


def models_list_and_reset(settings: Settings, stream: Stream, tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    """``models list`` shows the key-scope model and its partitions; ``models reset`` deletes
    them, and the next learner learns every event afresh."""
    where = ("--redis-url", settings.redis_url, "--key-prefix", settings.key_prefix)

    def models(*argv: str) -> tuple[int, str]:
        code = main(["models", *argv, *where])
        captured = capsys.readouterr()
        return code, captured.out + captured.err

    keys = len(key_models(settings))
    code, out = models("list")
    assert code == 0 and f"{settings.model}  key scope  {PARTITIONS} partitions  keys {keys}  " \
        f"learned {len(stream)}  newest checkpoint" in out, out
    code, out = models("list", "--model", settings.model)
    rows = [line.split() for line in out.splitlines() if line.startswith("partition ")]
    assert code == 0 and [int(r[1]) for r in rows] == list(range(PARTITIONS)), out
    assert sum(int(r[4]) for r in rows) == keys and sum(int(r[6]) for r in rows) == len(stream)
    code, out = models("show", "--model", settings.model)
    assert code == 1 and "is a key-scope model" in out and "Traceback" not in out
    code, out = models("reset", "--model", settings.model, "--yes")
    assert code == 0 and f"deleted the checkpoints of {PARTITIONS} partitions and {keys} key models" in out
    assert partitions(settings) == {} and key_models(settings) == {}
    learner = start(settings, tmp_path / "after-reset.log")
    try:
        wait_for("the learner to learn every event afresh", timeout=60, every=0.2,
                 condition=lambda: covered(settings) == len(stream))
    finally:
        stop(learner)
    check_against_the_oracle(settings, stream, published=False)


def test_chaos_sigkills_and_a_third_learner_leave_every_key_learned_exactly_once(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
    topic: Callable[..., str], tmp_path: Path,
) -> None:
    settings = key_settings(kafka, redis_server, unique, topic, key_cache_size=20)
    stream = keyed_event_bytes(phishing() * 6, keys=60, prefix="chaos")
    rng = random.Random(int(os.environ.get("CHAOS_SEED", "5")))
    feeder = Feeder(kafka.bootstrap, settings.events_topic, [(k, raw, True) for k, _, raw in stream],
                    per_second=800)
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    learners = [start(settings, log) for log in logs]
    try:
        for _ in range(4):
            time.sleep(rng.uniform(0.5, 2.5))  # a random moment, not a condition: this is the chaos
            victim = rng.randrange(2)
            learners[victim].kill()
            learners[victim].wait()
            learners[victim] = start(settings, logs[victim])
        third_log = tmp_path / "c.log"
        third = start(settings, third_log)
        wait_for("the third learner to own partitions", timeout=60, every=0.2,
                 condition=lambda: "partition " in third_log.read_text())
        stop(third)
        feeder.join()
        wait_for("every event checkpointed", lambda: covered(settings) == len(stream), timeout=120, every=0.2)
    finally:
        for learner in learners:
            stop(learner)
    check_against_the_oracle(settings, stream)


def frozen_oracle(stream: Stream) -> dict[str, Any]:
    """Each key's River model after its events in ``stream``."""
    models: dict[str, Any] = {}
    for key, _, raw in stream:
        x, y = _parse(raw)
        model = models.setdefault(key, preprocessing.StandardScaler() | linear_model.LogisticRegression())
        model.learn_one(x, y)
    return models


def proba_of(model: Any, raw: bytes) -> dict[str, float]:
    return {str(c).lower(): p for c, p in model.predict_proba_one(_parse(raw)[0]).items()}


def test_a_frozen_predictor_answers_each_key_by_its_model_and_follows_new_versions(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
    topic: Callable[..., str], tmp_path: Path,
) -> None:
    learn = key_settings(kafka, redis_server, unique, topic)
    port = free_port()
    serve = replace(learn, events_topic=topic("live", partitions=PARTITIONS), http_port=port,
                    key_cache_size=5, predictions_topic=unique("served"))
    stream = keyed_event_bytes(phishing(), keys=15)
    first, second = stream[:700], stream[700:]
    produce(kafka.bootstrap, learn.events_topic, [(k, raw) for k, _, raw in first])
    learner = start(learn, tmp_path / "learner.log")
    try:
        wait_for("the first events checkpointed", lambda: covered(learn) == len(first), timeout=60, every=0.2)
    finally:
        stop(learner)
    predictor = start(serve, tmp_path / "predictor.log", "serve")
    try:
        # Every key, once, through Kafka and over HTTP: its model after the first events.
        probes = _probes(first, "first")
        produce(kafka.bootstrap, serve.events_topic, probes)
        answers = wait_for("a frozen prediction of each probe", timeout=60, every=0.2,
                           condition=lambda: _answers(serve, {f"first-{k}" for k, _ in probes}))
        models = frozen_oracle(first)
        expected = {k: proba_of(models[k], raw) for k, raw in probes}
        assert {a["key"]: a["proba"] for a in answers.values()} == expected
        assert {a["mode"] for a in answers.values()} == {"frozen"}
        versions = {meta.version for meta, _ in partitions(learn).values()}
        assert {a["model_version"] for a in answers.values()} <= versions
        batch = b"[" + b",".join(r for _, r in probes) + b"]"
        status, body = call(f"http://127.0.0.1:{port}/predict", batch)
        assert status == 200, body
        assert {a["id"]: (a["proba"], a["model_version"]) for a in json.loads(body)} == {
            i: (a["proba"], a["model_version"]) for i, a in answers.items()}
        status, body = call(f"http://127.0.0.1:{port}/predict", b'{"id": "no-key", "x": {"a": 1}}')
        assert status == 400 and json.loads(body)["reason"] == "missing_key", body

        # The learner goes on: the predictor serves each key's newer model, unrestarted.
        produce(kafka.bootstrap, learn.events_topic, [(k, raw) for k, _, raw in second])
        learner = start(learn, tmp_path / "learner.log")
        try:
            wait_for("every event checkpointed", lambda: covered(learn) == len(stream), timeout=60, every=0.2)
        finally:
            stop(learner)
        models = frozen_oracle(stream)
        expected = {k: proba_of(models[k], raw) for k, raw in probes}

        def follows() -> bool:
            status, body = call(f"http://127.0.0.1:{port}/predict", batch)
            return status == 200 and {a["key"]: a["proba"] for a in json.loads(body)} == expected

        wait_for("the predictor to serve the newer models", follows, timeout=30, every=0.2)
        again = _probes(first, "again")
        produce(kafka.bootstrap, serve.events_topic, again)
        later = wait_for("the second round of frozen predictions", timeout=60, every=0.2,
                         condition=lambda: _answers(serve, {f"again-{k}" for k, _ in again}))
        assert {a["key"]: a["proba"] for a in later.values()} == expected
    finally:
        stop(predictor)


def _answers(settings: Settings, ids: set[str]) -> dict[str, dict[str, Any]] | None:
    """The predictions of the events ``ids`` on the predictor's topic, once each has one."""
    messages = read_all(settings.bootstrap_servers, settings.predictions_topic)
    sent = {m.json()["id"]: m.json() for m in messages}
    return {i: sent[i] for i in ids} if ids <= set(sent) else None


def _probes(stream: Stream, name: str) -> list[tuple[str, bytes]]:
    """One event of each key, under ids of its own: (key, event)."""
    last = {k: raw for k, _, raw in stream}
    return [(k, json.dumps({**json.loads(raw), "id": f"{name}-{k}"}).encode()) for k, raw in last.items()]


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def test_a_hundred_thousand_keys_through_a_cache_of_ten_thousand_keep_the_learners_memory_bounded(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
    topic: Callable[..., str], tmp_path: Path,
) -> None:
    keys, cache = 100_000, 10_000
    settings = key_settings(kafka, redis_server, unique, topic, key_cache_size=cache, checkpoint_every=2000,
                            model_spec="linear_model.LogisticRegression()")
    rows = phishing()
    events = [(f"k-{i}", json.dumps({"id": f"e-{i}", "key": f"k-{i}", "x": rows[i % len(rows)][0],
                                     "y": rows[i % len(rows)][1]}).encode()) for i in range(keys)]
    produce(kafka.bootstrap, settings.events_topic, events[:20_000])
    learner = start(settings, tmp_path / "learner.log")
    try:
        wait_for("20,000 keys learned", lambda: covered(settings) >= 20_000, timeout=120, every=0.5)
        early = rss_bytes(learner.pid)
        produce(kafka.bootstrap, settings.events_topic, events[20_000:])
        wait_for("100,000 keys learned", lambda: covered(settings) == keys, timeout=300, every=0.5)
        late = rss_bytes(learner.pid)
    finally:
        stop(learner)
    store = RedisKeyedStore.for_settings(settings)
    assert sum(store.key_count(settings.model, p) for p in range(PARTITIONS)) == keys
    # Kept in memory, the 80,000 keys learned since would take this much more.
    unbounded = 80_000 * _bytes_per_key_model(settings.model_spec, rows)
    growth = late - early
    print(f"learner RSS {early / 2**20:.0f} MiB at 20,000 keys, {late / 2**20:.0f} MiB at 100,000; "
          f"unbounded it would grow by ~{unbounded / 2**20:.0f} MiB")
    assert growth < 32 * 2**20 < unbounded / 4, (early, late, unbounded)


def _bytes_per_key_model(spec: str, rows: list[Any]) -> float:
    import tracemalloc

    from stream_learner.events import Event, Source
    from stream_learner.keyed import KeyedEngine

    engine = KeyedEngine(spec)
    part, kept = engine.fresh_partition(), []
    tracemalloc.start()
    try:
        for i in range(2000):
            x, y = rows[i % len(rows)]
            event = Event(f"e-{i}", f"k-{i}", None, x, y, Source("t", 0, i, i))
            model = engine.model_for(part, None, event)
            engine.process(part, model, event)
            kept.append(model)
        return tracemalloc.get_traced_memory()[0] / 2000
    finally:
        tracemalloc.stop()


def test_a_stalled_redis_holds_the_key_learner_up_and_loses_nothing(
    kafka: KafkaBroker, unique: Callable[[str], str], topic: Callable[..., str], tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    assert redis.proc is not None
    try:
        # A cache of 3 for 20 keys: the learner needs Redis for most events.
        settings = key_settings(kafka, redis, unique, topic, key_cache_size=3, redis_timeout=0.5)
        stream = keyed_event_bytes(phishing()[:900], keys=20)
        produce(kafka.bootstrap, settings.events_topic, [(k, raw) for k, _, raw in stream[:300]])
        store = RedisKeyedStore.for_settings(settings)
        learner = InThread(KeyLearner(settings, store, kafka_clients(settings)))
        wait_for("the first events checkpointed", lambda: covered(settings) == 300, timeout=60, every=0.2)
        caplog.set_level(logging.INFO)
        os.kill(redis.proc.pid, signal.SIGSTOP)
        try:
            produce(kafka.bootstrap, settings.events_topic, [(k, raw) for k, _, raw in stream[300:]])
            wait_for("the learner to wait for Redis", timeout=30, every=0.1, condition=lambda: any(
                "cannot read key models now" in r.getMessage() for r in caplog.records))
            learner.check()
        finally:
            os.kill(redis.proc.pid, signal.SIGCONT)
        wait_for("every event checkpointed", lambda: covered(settings) == len(stream), timeout=60, every=0.2)
        learner.stop()
        waits = [r for r in caplog.records if "cannot read key models now" in r.getMessage()
                 and r.levelno >= logging.WARNING]
        assert len(waits) == 1  # said once while it lasted, not once a second
        assert any("the store answers again" in r.getMessage() for r in caplog.records)
        check_against_the_oracle(settings, stream)
    finally:
        redis.stop()
