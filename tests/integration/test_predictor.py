"""The frozen predictor on real Kafka and Redis: frozen bytes, hot reload, scale-out."""

from __future__ import annotations

import pickle
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from consumers.learner import Learner
from consumers.predictor import Predictor
from tests.integration.helpers import (
    InThread,
    kafka_clients,
    latest_meta,
    learn_all,
    make_settings,
    phishing,
    produce,
    read_topic,
    spawn,
    store_for,
    wait_for,
    wait_learned,
)
from tools import service
from tools.events import event_bytes
from tools.localstack import ROOT, KafkaBroker, RedisServer
from tools.service import service_env


def test_frozen_model_never_changes_and_hot_reloads_without_loss_or_duplicates(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
    topic: Callable[..., str], kafka_client: str,
) -> None:
    rows = phishing()
    learn = make_settings(kafka, redis_server, unique, events_topic=topic("train"), checkpoint_interval=0.3,
                          kafka_client=kafka_client)
    # This predictor busy-polls (--busy-poll-ms); the others in this file block in their polls.
    serve = replace(learn, events_topic=topic("live"), predictions_topic=unique("served"), busy_poll_ms=2.0)

    # v1: a learner trained on the first half.
    produce(kafka.bootstrap, learn.events_topic, event_bytes(rows[:625], "train"))
    learner = InThread(Learner(learn, store_for(learn), kafka_clients(learn)))
    v1 = wait_learned(learn, 625)

    predictor = Predictor(serve, store_for(serve), kafka_clients(serve))
    serving = InThread(predictor)
    wait_for("the predictor to load v1", lambda: predictor.engine is not None)
    before = pickle.dumps(predictor.engine.state if predictor.engine else None)

    # 10,000 unlabelled events (labels would not matter: a frozen model never learns), each with
    # features the model has never seen, which a River model would otherwise grow by.
    unseen = [({**x, f"new-{i}": 1.0, "country": f"c{i}"}, y) for i, (x, y) in enumerate((rows * 8)[:10_000])]
    live = event_bytes(unseen, "live", labelled=False)
    produce(kafka.bootstrap, serve.events_topic, live)
    first = read_topic(kafka.bootstrap, serve.predictions_topic, len(live))
    assert predictor.engine is not None and predictor.version == v1.version
    assert pickle.dumps(predictor.engine.state) == before
    ids = Counter(m.json()["id"] for m in first)
    assert ids == Counter(key for key, _ in live)
    assert {(m.json()["mode"], m.json()["model_version"]) for m in first} == {("frozen", v1.version)}

    # While the predictor serves a steady stream, the learner writes v2.
    swap = event_bytes(rows[625:], "swap", start=0, labelled=False)
    produce(kafka.bootstrap, serve.events_topic, swap[:200])
    read_topic(kafka.bootstrap, serve.predictions_topic, len(live) + 200)
    produce(kafka.bootstrap, learn.events_topic, event_bytes(rows[625:], "train", start=625))
    v2 = wait_learned(learn, len(rows))
    published_at = time.monotonic()
    learner.stop()
    # Events produced one checkpoint interval after v2 was written carry v2.
    wait_for("one checkpoint interval", lambda: time.monotonic() - published_at > learn.checkpoint_interval)
    produce(kafka.bootstrap, serve.events_topic, swap[200:])

    everything = read_topic(kafka.bootstrap, serve.predictions_topic, len(live) + len(swap))
    serving.stop()
    assert len(everything) == len(live) + len(swap)
    swapped = sorted((m for m in everything if m.json()["id"].startswith("swap-")), key=lambda m: m.offset)
    assert Counter(m.json()["id"] for m in swapped) == Counter(key for key, _ in swap)
    versions = [m.json()["model_version"] for m in swapped]
    assert versions == sorted(versions), "a version swap went backwards"
    assert versions[0] == v1.version and versions[-1] == v2.version
    late = {m.json()["model_version"] for m in swapped if int(m.json()["id"].split("-")[1]) >= 200}
    assert late == {v2.version}
    assert pickle.dumps(predictor.engine.state) != before  # it really swapped models


def test_two_predictors_share_partitions_and_one_takes_over(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
    topic: Callable[..., str],
) -> None:
    rows = phishing()
    learn = make_settings(kafka, redis_server, unique, events_topic=topic("train"))
    produce(kafka.bootstrap, learn.events_topic, event_bytes(rows[:300], "train"))
    learner = InThread(Learner(learn, store_for(learn), kafka_clients(learn)))
    wait_learned(learn, 300)
    learner.stop()

    serve = replace(learn, events_topic=topic("live", partitions=4), predictions_topic=unique("served"),
                    commit_interval=0.2)
    a, b = (Predictor(serve, store_for(serve), kafka_clients(serve)) for _ in range(2))
    run_a, run_b = InThread(a), InThread(b)

    def balanced() -> bool:
        return all(len(p.assigned) == 2 for p in (a, b))

    wait_for("both predictors to own two partitions", balanced, timeout=90)
    first = event_bytes(rows[:1000], "one", labelled=False)
    produce(kafka.bootstrap, serve.events_topic, first)
    seen = read_topic(kafka.bootstrap, serve.predictions_topic, len(first))
    assert Counter(m.json()["id"] for m in seen) == Counter(k for k, _ in first)  # exactly once each
    assert balanced(), "a rebalance happened in the middle"

    run_a.stop()
    wait_for("b to own all four partitions",
             lambda: len(b.assigned) == 4, timeout=90)
    rest = event_bytes(rows[1000:], "two", labelled=False)
    produce(kafka.bootstrap, serve.events_topic, rest)
    everything = read_topic(kafka.bootstrap, serve.predictions_topic, len(first) + len(rest))
    run_b.stop()
    assert {m.json()["id"] for m in everything} == {k for k, _ in first + rest}
    assert latest_meta(learn) is not None


def test_serve_without_a_checkpoint_waits_then_fails_clearly(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
) -> None:
    settings = make_settings(kafka, redis_server, unique, wait_for_model=1.0)
    proc = spawn("serve", settings)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "waiting up to 1 s for a checkpoint" in out
    assert f"NoCheckpoint: model {settings.model}: no checkpoint" in out and "Traceback" not in out


def test_a_predictor_not_told_of_a_dead_letter_topic_counts_and_logs_and_writes_none(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
    topic: Callable[..., str],
) -> None:
    rows = phishing()[:100]
    learn = make_settings(kafka, redis_server, unique, events_topic=topic("train"))
    produce(kafka.bootstrap, learn.events_topic, event_bytes(rows))
    learn_all(learn, len(rows))
    serve = replace(learn, events_topic=topic("live"), predictions_topic=unique("served"),
                    dead_letter_topic="")
    bad = [(None, b"not json"), (None, b'{"x": {"a": NaN}}'), (None, b'{"y": true}')]
    produce(kafka.bootstrap, serve.events_topic, [*event_bytes(rows[:20]), *bad])
    predictor = Predictor(serve, store_for(serve), kafka_clients(serve))
    serving = InThread(predictor)
    assert len(read_topic(kafka.bootstrap, serve.predictions_topic, 20)) == 20
    wait_for("the three rejections", lambda: predictor.letters is not None
             and sum(predictor.letters.counts.values()) == 3)
    serving.stop()
    assert predictor.letters is not None
    assert predictor.letters.counts == {"invalid_json": 1, "non_finite": 1, "missing_x": 1}
    assert predictor.publisher is not None and predictor.publisher.sent == 20  # predictions only


def test_your_own_model_a_predictor_that_cannot_import_its_module_says_so(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
    topic: Callable[..., str], tmp_path: Path,
) -> None:
    """docs/models.md's worked example: a module next to the config, on PYTHONPATH."""
    (tmp_path / "mymodels.py").write_text(
        "from river import base, linear_model\n\n"
        "class Doubled(base.Transformer):\n"
        "    def transform_one(self, x):\n"
        "        return {k: 2 * v for k, v in x.items()}\n\n"
        "def fraud_model():\n"
        "    return Doubled() | linear_model.LogisticRegression()\n")
    rows = phishing()[:100]
    learn = make_settings(kafka, redis_server, unique, events_topic=topic("train"),
                          model_spec="mymodels:fraud_model")
    produce(kafka.bootstrap, learn.events_topic, event_bytes(rows))
    learner = service.spawn("learn", {**service_env(learn), "PYTHONPATH": str(tmp_path)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, die_with_parent=False)
    try:
        wait_learned(learn, len(rows))
    finally:
        learner.terminate()
        learner.wait(60)

    serve = replace(learn, events_topic=topic("live"), predictions_topic=unique("served"), model_spec="")

    def serve_with(env: dict[str, str]) -> tuple[int, str]:
        proc = subprocess.run([sys.executable, "-m", "stream_learner.cli", "serve"], cwd=ROOT,
                              env={**service_env(serve), **env}, capture_output=True, text=True, timeout=60)
        return proc.returncode, (proc.stdout + proc.stderr).strip().splitlines()[-1]

    code, last = serve_with({})
    assert code == 1 and "give it --model-packages mymodels" in last, last
    code, last = serve_with({"STREAM_LEARNER_MODEL_PACKAGES": "mymodels"})
    assert code == 1 and "mymodels.Doubled, and this process cannot import it" in last, last
    assert "PYTHONPATH" in last and "Traceback" not in last
