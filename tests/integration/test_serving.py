"""What frozen predictors serve: the served version, set by hand, by a rollback or by the publish
gate; tagged and served versions outlive --keep-versions; export and import."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from consumers.learner import Learner
from consumers.predictor import Predictor
from stream_learner.checkpoint import read_meta
from stream_learner.models import build_model
from tests.integration.helpers import (
    InThread,
    kafka_clients,
    latest_meta,
    load_checkpoint,
    make_settings,
    phishing,
    produce,
    spawn,
    store_for,
    wait_for,
    wait_learned,
)
from tools.events import event_bytes
from tools.localstack import KafkaBroker, RedisServer

SPEC = "preprocessing.StandardScaler() | linear_model.LogisticRegression()"


def run(settings: Any, *args: str) -> subprocess.CompletedProcess[str]:
    proc = spawn("models", settings, *args)
    out, _ = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out)


def test_serve_by_hand_roll_back_and_keep_what_is_tagged_or_served(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
    topic: Callable[..., str], tmp_path: Path,
) -> None:
    rows = phishing()
    settings = make_settings(kafka, redis_server, unique, events_topic=topic("events"), model_spec=SPEC,
                             keep_versions=2, checkpoint_every=100)
    serve = replace(settings, events_topic=topic("live"), predictions_topic=unique("served"))
    store = store_for(settings)
    produce(kafka.bootstrap, settings.events_topic, event_bytes(rows[:600]))
    learner = InThread(Learner(settings, store, kafka_clients(settings)))
    good = wait_learned(settings, 600).version
    assert run(settings, "tag", str(good), "--tag", "good").returncode == 0
    predictor = Predictor(serve, store_for(serve), kafka_clients(serve))
    serving = InThread(predictor)
    wait_for("the predictor to serve the latest", lambda: predictor.version == good)

    produce(kafka.bootstrap, settings.events_topic, event_bytes(rows[600:1200], start=600))
    later = wait_learned(settings, 1200).version
    wait_for("the predictor to follow", lambda: predictor.version == later)
    versions = store.versions(settings.model)
    assert versions[0] == good and len(versions) == 3 and versions[1] > good, \
        "the newest two (--keep-versions), and the tagged one"

    # By hand: held on a version while the learner goes on, until --follow.
    held = run(settings, "serve", "--version", str(good), "--reason", "hold it")
    assert held.returncode == 0, held.stdout
    wait_for("the predictor to serve the held version", lambda: predictor.version == good)
    produce(kafka.bootstrap, settings.events_topic, event_bytes(rows[1200:1250], start=1200))
    wait_learned(settings, 1250)
    assert store.served(settings.model).version == good == predictor.version
    assert run(settings, "serve", "--follow").returncode == 0
    wait_for("the predictor to follow again",
             lambda: predictor.version == store.latest_version(settings.model))

    # A rollback: predictors serve it at once, and the learner goes on from it.
    changes = len(predictor.board.history()[1])
    back = run(settings, "rollback", "--to", str(good), "--reason", "bad data since")
    assert back.returncode == 0, back.stdout
    # At once; and then on from it, as soon as the learner has gone on from it.
    wait_for("the predictor to serve the rolled-back version",
             lambda: good in [v for _, v in predictor.board.history()[1][changes:]])
    wait_for("the learner to go on from it", lambda: getattr(latest_meta(settings), "history", None))
    more = [({**x, "late": 1.0}, y) for x, y in rows[:40]]
    produce(kafka.bootstrap, settings.events_topic, event_bytes(more, prefix="more"))
    meta = wait_learned(settings, 640)
    entry = meta.history[-1]
    assert (entry["action"], entry["to"], entry["reason"]) == ("rollback", good, "bad data since")
    assert entry["learned"] == {"before": 1250, "after": 600}
    oracle = build_model(SPEC)
    for x, y in [*rows[:600], *more]:
        oracle.learn_one(x, y)
    assert load_checkpoint(settings).state.model["LogisticRegression"].weights == \
        oracle["LogisticRegression"].weights
    wait_for("predictors to follow the learner again", lambda: predictor.version == meta.version)
    learner.stop()
    serving.stop()

    listing = run(settings, "list")
    assert f"v{good} " in listing.stdout and "tag good" in listing.stdout
    assert "served (learner)" in listing.stdout
    refused = run(settings, "rollback", "--to", "999")
    assert refused.returncode == 2 and refused.stdout.startswith("stream-learner models: --to 999: ")


def test_export_and_import_verify_before_anything_is_written(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
    topic: Callable[..., str], tmp_path: Path,
) -> None:
    rows = phishing()
    settings = make_settings(kafka, redis_server, unique, events_topic=topic("events"), model_spec=SPEC)
    produce(kafka.bootstrap, settings.events_topic, event_bytes(rows[:300]))
    learner = InThread(Learner(settings, store_for(settings), kafka_clients(settings)))
    version = wait_learned(settings, 300).version
    learner.stop()
    file = tmp_path / "model.json"
    exported = run(settings, "export", str(version), "--file", str(file))
    assert exported.returncode == 0, exported.stdout

    copy = replace(settings, model=unique("copy"))
    tampered = tmp_path / "tampered.json"
    doc = json.loads(file.read_text())
    doc["header"] = doc["header"].replace('"learned":300', '"learned":301')
    tampered.write_text(json.dumps(doc))
    refused = run(copy, "import", "--file", str(tampered))
    assert refused.returncode == 1 and "signature does not match" in refused.stdout
    assert refused.stdout.count("\n") == 1 and store_for(copy).versions(copy.model) == []

    imported = run(copy, "import", "--file", str(file))
    assert imported.returncode == 0, imported.stdout
    original, twin = load_checkpoint(settings, version), load_checkpoint(copy)
    assert twin.meta.version == 1 and twin.meta.model == copy.model
    assert read_meta(store_for(copy).load(copy.model)).learned == 300
    weights = original.state.model["LogisticRegression"].weights
    assert twin.state.model["LogisticRegression"].weights == weights


def test_the_publish_gate_holds_predictors_on_the_last_version_that_was_no_worse(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
    topic: Callable[..., str],
) -> None:
    rows = phishing()
    flipped = [(x, y if i < 800 else not y) for i, (x, y) in enumerate(rows)]
    settings = make_settings(kafka, redis_server, unique, events_topic=topic("events"), model_spec=SPEC,
                             publish_gate="LogLoss", publish_margin=0.0, rolling_window=200,
                             checkpoint_every=100, keep_versions=2)
    produce(kafka.bootstrap, settings.events_topic, event_bytes(flipped))
    store = store_for(settings)
    learner = InThread(Learner(settings, store, kafka_clients(settings)))
    wait_learned(settings, len(rows))
    learner.stop()

    served = store.served(settings.model)
    latest = store.latest_version(settings.model)
    assert served.by == "learner" and served.version < latest, "the flipped labels are not served"
    assert served.version in store.versions(settings.model), "the served version is kept"
    served_loss = read_meta(store.load(settings.model, served.version)).metrics["LogLoss@200"]
    latest_loss = read_meta(store.load(settings.model, latest)).metrics["LogLoss@200"]
    assert latest_loss is not None and served_loss is not None and latest_loss > served_loss
