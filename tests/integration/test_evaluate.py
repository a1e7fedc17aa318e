"""stream-learner evaluate on the real broker: offset and time ranges equal the in-process
backtest on exactly those records, in the learner's order; the JSONL path as a process."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaProducer
from river import evaluate, metrics

from stream_learner import cli
from stream_learner.backtest import Item, backtest
from stream_learner.config import Settings
from stream_learner.events import Source
from stream_learner.models import build_model
from tests.integration.helpers import make_settings, phishing, spawn
from tools.events import event_bytes
from tools.localstack import KafkaBroker, RedisServer

CANDIDATES = {"lr": "preprocessing.StandardScaler() | linear_model.LogisticRegression()",
              "tree": "tree.HoeffdingTreeClassifier(grace_period=50)"}
BASE_MS = 1_764_086_400_000  # 2025-11-25T16:00:00Z
PARTITIONS = 3
BAD = [b'{"x": {"a": NaN}, "y": true}', b"not json", b'{"x": {"a": 1.0}, "y": "maybe"}']


@pytest.fixture
def produced(kafka: KafkaBroker, topic: Callable[..., str]) -> tuple[str, list[tuple[bytes, Source]]]:
    """600 events (a bad one every 50th) over three partitions, 10 ms apart, the partitions'
    clocks interleaved: (topic, [(value, where it went)])."""
    name = topic("events", partitions=PARTITIONS)
    values = [raw for _, raw in event_bytes(phishing()[:600])]
    for i in range(0, 600, 50):
        values[i] = BAD[(i // 50) % len(BAD)]
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all", linger_ms=5)
    futures = [producer.send(name, value=v, partition=i % PARTITIONS, timestamp_ms=BASE_MS + 10 * i)
               for i, v in enumerate(values)]
    producer.flush()
    producer.close()
    out = []
    for value, future in zip(values, futures, strict=True):
        meta = future.get(timeout=30)
        out.append((value, Source(name, meta.partition, meta.offset, meta.timestamp)))
    return name, out


def in_order(records: list[Item]) -> list[Item]:
    """The learner's order across partitions: smallest timestamp first, ties by partition."""
    return sorted(records, key=lambda r: (r[1].timestamp_ms or 0, r[1].topic, r[1].partition, r[1].offset))


def figures(board: dict[str, Any]) -> dict[str, Any]:
    """What must be equal: everything but the timings and the model's size (a tree's pickle
    differs by a few hundred bytes from run to run), which must be near."""
    return {c["name"]: {k: c[k] for k in ("rank", "metrics", "events", "learned", "scored", "dead_letters")}
            | {"KiB": round(c["model_bytes"] / 1024 / 20)} for c in board["candidates"]}


def run_evaluate(settings: Settings, capsys: pytest.CaptureFixture[str], *flags: str) -> dict[str, Any]:
    argv = ["evaluate", "--bootstrap-servers", settings.bootstrap_servers, "--kafka-client",
            settings.kafka_client, "--events-topic", settings.events_topic, "--model", settings.model,
            "--rolling-window", "100", "--format", "json", *flags]
    for name, spec in CANDIDATES.items():
        argv += ["--candidate", f"{name}={spec}"]
    capsys.readouterr()
    assert cli.main(argv) == 0
    return dict(json.loads(capsys.readouterr().out))


def oracle(records: list[Item]) -> dict[str, Any]:
    settings = Settings(rolling_window=100)
    return figures(backtest(in_order(records), settings, CANDIDATES).as_dict())


def learner_group_untouched(kafka: KafkaBroker, settings: Settings) -> bool:
    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    try:
        groups = admin.list_groups()
        names = {g["group_id"] if isinstance(g, dict) else g[0] for g in groups}
        return not any(n.startswith(f"stream-learner.{settings.model}.")
                       and not n.endswith(".reader") for n in names)
    finally:
        admin.close()


def test_an_offset_range_equals_the_backtest_of_exactly_those_records(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str], kafka_client: str,
    produced: tuple[str, list[Item]], capsys: pytest.CaptureFixture[str],
) -> None:
    name, records = produced
    settings = make_settings(kafka, redis_server, unique, events_topic=name, kafka_client=kafka_client)
    board = run_evaluate(settings, capsys, "--from-offset", "20", "--to-offset", "0:150,1:170,2:120")
    ends = {0: 150, 1: 170, 2: 120}
    chosen = [r for r in records if 20 <= r[1].offset < ends[r[1].partition]]
    assert len(chosen) == 130 + 150 + 100
    assert figures(board) == oracle(chosen)
    lr = next(c for c in board["candidates"] if c["name"] == "lr")
    reasons = dict(zip(BAD, ("non_finite", "invalid_json", "new_class"), strict=True))
    expected: dict[str, int] = {}
    for value, _ in chosen:
        if value in reasons:
            expected[reasons[value]] = expected.get(reasons[value], 0) + 1
    assert lr["events"] == 380 and lr["dead_letters"] == dict(sorted(expected.items()))
    assert sum(expected.values()) == 7 and lr["learned"] == 373
    # River's own loop over the same events, in the same order, the bad ones left out.
    docs = [json.loads(v or b"") for v, _ in in_order(chosen) if v not in BAD]
    rows = [(doc["x"], doc["y"]) for doc in docs]
    accuracy = metrics.Accuracy()
    evaluate.progressive_val_score(rows, build_model(CANDIDATES["lr"]), accuracy)
    assert lr["metrics"]["Accuracy"] == accuracy.get()
    assert learner_group_untouched(kafka, settings)


def test_a_time_range_equals_the_backtest_of_exactly_those_records(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str], kafka_client: str,
    produced: tuple[str, list[Item]], capsys: pytest.CaptureFixture[str],
) -> None:
    name, records = produced
    settings = make_settings(kafka, redis_server, unique, events_topic=name, kafka_client=kafka_client)
    # From the 100th event's time (ISO-8601, 1 s after BASE) to the 450th's (epoch ms), excluded.
    board = run_evaluate(settings, capsys, "--from-time", "2025-11-25T16:00:01Z",
                         "--to-time", str(BASE_MS + 4500))
    chosen = [r for r in records if BASE_MS + 1000 <= (r[1].timestamp_ms or 0) < BASE_MS + 4500]
    assert len(chosen) == 350
    assert figures(board) == oracle(chosen)
    assert figures(board) != oracle(records)
    assert learner_group_untouched(kafka, settings)


def test_the_whole_topic_with_a_labels_delay_by_default_bounds(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
    produced: tuple[str, list[Item]], capsys: pytest.CaptureFixture[str],
) -> None:
    name, records = produced
    settings = make_settings(kafka, redis_server, unique, events_topic=name)
    board = run_evaluate(settings, capsys, "--labels-delay", "30")
    expected = figures(backtest(in_order(records), Settings(rolling_window=100), CANDIDATES,
                                labels_delay=30).as_dict())
    assert figures(board) == expected
    assert expected != oracle(records)  # the delay matters


def jsonl(tmp_path: Path) -> Path:
    path = tmp_path / "events.jsonl"
    lines = [raw for _, raw in event_bytes(phishing()[:300])] + BAD
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_a_jsonl_file_through_the_cli_as_a_process(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str], tmp_path: Path,
) -> None:
    settings = replace(make_settings(kafka, redis_server, unique),
                       candidates=tuple(f"{n}={s}" for n, s in CANDIDATES.items()))
    path = jsonl(tmp_path)
    proc = spawn("evaluate", settings, "--file", str(path), "--format", "json")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    board = json.loads(out)
    records = [(raw.rstrip(b"\n"), Source("events.jsonl", 0, n))
               for n, raw in enumerate(path.read_bytes().splitlines(keepends=True), 1)]
    expected = figures(backtest(records, Settings(), CANDIDATES).as_dict())
    assert figures(board) == expected
    assert {c["name"]: c["dead_letters"] for c in board["candidates"]} == \
        {name: {"invalid_json": 1, "new_class": 1, "non_finite": 1} for name in CANDIDATES}

    proc = spawn("evaluate", settings, "--file", str(path))
    table, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0 and table.splitlines()[0].split()[:3] == ["rank", "candidate", "Accuracy"]
    assert table.splitlines()[-1] == "ranked by Accuracy (higher is better)"


@pytest.mark.parametrize(("extra", "code", "line"), [
    (("--file", "{tmp}/missing.jsonl"), 2,
     "stream-learner evaluate: --file {tmp}/missing.jsonl: no such file"),
    (("--file", "{tmp}/events.jsonl", "--candidate", "bad=os.system('id')"), 2,
     """stream-learner evaluate: --candidate bad: 'os' is not a River module (spec "os.system('id')")"""),
    (("--from-time", "2025-11-25T16:00:10Z", "--to-time", "2025-11-25T16:00:00Z"), 2,
     "stream-learner evaluate: --to-time 2025-11-25T16:00:00Z: before --from-time 2025-11-25T16:00:10Z"),
    (("--from-time", "yesterday"), 2,
     "stream-learner evaluate: --from-time 'yesterday': not an ISO-8601 time nor epoch milliseconds"),
    (("--events-topic", "no-such-topic-here"), 1,
     "stream-learner evaluate: StreamLearnerError: --events-topic no-such-topic-here: no such topic"),
])
def test_errors_are_one_line_with_the_exit_code(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str], tmp_path: Path,
    extra: tuple[str, ...], code: int, line: str,
) -> None:
    jsonl(tmp_path)
    settings = make_settings(kafka, redis_server, unique)
    extra = tuple(arg.replace("{tmp}", str(tmp_path)) for arg in extra)
    proc = spawn("evaluate", settings, *extra, "--candidate", f"lr={CANDIDATES['lr']}")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == code, out
    assert out.splitlines() == [line.replace("{tmp}", str(tmp_path))], out
