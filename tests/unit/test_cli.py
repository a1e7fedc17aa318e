"""The CLI's edges: exit codes and messages, without servers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stream_learner.cli import build_parser, iter_events, load_settings, main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_each_command_shows_its_own_options_grouped_with_one_default(
        capsys: pytest.CaptureFixture[str]) -> None:
    from stream_learner.config import flag_of, settings_fields

    for command in ("learn", "serve", "produce", "models"):
        code, out = run(capsys, command, "--help")
        assert code == 0 and "STREAM_LEARNER_<NAME>" in out
        options = out.split("Every option is also")[0]
        for f in settings_fields():
            flag = flag_of(f.name)
            if command == "models" and f.name == "challengers":
                continue  # models promote has a --challenger NAME of its own
            shown = re.search(rf"{flag}(?![\w-])", options) is not None
            assert shown == (command in f.metadata["modes"]), (command, flag)
        assert "None" not in out and "default: " not in out, "one default per option, stated once"
    for command in ("learn", "serve"):
        code, out = run(capsys, command, "--help")
        groups = [line for line in out.splitlines()
                  if line and not line.startswith(" ") and line.endswith(":")]
        assert groups[:3] == ["options:", "required:", "Kafka:"], groups
    code, out = run(capsys, "models", "--help")
    assert "--sasl-password" not in out and "--bootstrap-servers" not in out
    code, out = run(capsys, "produce", "--help")
    assert "--redis-url" not in out and "--dataset" in out


def test_version_and_the_log_level_before_after_the_command_and_from_the_environment(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    code, out = run(capsys, "--version")
    assert code == 0 and out.startswith("stream-learner ")
    assert build_parser().parse_args(["learn", "--log-level", "DEBUG"]).log_level == "DEBUG"
    assert build_parser().parse_args(["--log-level", "ERROR", "learn"]).log_level == "ERROR"
    monkeypatch.setenv("STREAM_LEARNER_LOG_LEVEL", "loud")
    code, out = run(capsys, "models", "list")
    assert code == 2 and "STREAM_LEARNER_LOG_LEVEL: must be one of" in out


@pytest.mark.parametrize(("argv", "needle"), [
    (["learn", "--no-such-flag"], "--no-such-flag"),
    (["learn", "--checkpoint-every", "ten"], "--checkpoint-every: expected int, got 'ten'"),
    (["serve", "--start-from", "middle"], "--start-from: must be one of earliest, latest"),
    (["learn", "--model-spec", "linear_model.Nope()", "--hmac-key", "k"], "--model-spec"),
    # River builds it, and it fails on every event: refused before Kafka or Redis (none here).
    (["learn", "--model-spec", "linear_model.LogisticRegression(l2='a lot')", "--hmac-key", "k",
      "--bootstrap-servers", "127.0.0.1:1", "--redis-url", "redis://127.0.0.1:1/0"],
     "fails on a first event: TypeError"),
    (["learn"], "--hmac-key"),
    (["produce", "--dataset", "NoSuchSet"], "--dataset: 'NoSuchSet' is not a River dataset"),
    (["produce"], "one of the arguments --dataset --file is required"),
    (["produce", "--dataset", "Phishing", "--keys", "-1"], "--keys: must be at least 0, got -1"),
    (["learn", "--config", "/nonexistent.toml"], "--config /nonexistent.toml: no such file"),
    (["learn", "--hmac-key", "k", "--model-scope", "key", "--challenger", "b=tree.HoeffdingTreeClassifier()"],
     "--challenger: not with --model-scope key"),
    (["learn", "--hmac-key", "k", "--model-scope", "key", "--labels-topic", "labels"],
     "--labels-topic: not with --model-scope key"),
    (["learn", "--hmac-key", "k", "--model-scope", "key", "--audit-topic", "audit"],
     "--audit-topic: not with --model-scope key"),
    (["learn", "--hmac-key", "k", "--model-scope", "key", "--alerts-topic", "alerts"],
     "--alerts-topic: not with --model-scope key"),
    (["learn", "--hmac-key", "k", "--model-scope", "key", "--on-drift", "start-challenger"],
     "--on-drift: not with --model-scope key"),
    (["learn", "--hmac-key", "k", "--key-metric", "alice"], "--key-metric: only with --model-scope key"),
    (["learn", "--hmac-key", "k", "--key-prior", "global"], "--key-prior: only with --model-scope key"),
    (["learn", "--hmac-key", "k", "--key-ttl", "60"], "--key-ttl: only with --model-scope key"),
    (["serve", "--hmac-key", "k", "--model-scope", "key", "--pin-version", "3"],
     "--pin-version: not with --model-scope key"),
])
def test_usage_errors_exit_2_and_name_the_flag(capsys: pytest.CaptureFixture[str], argv: list[str],
                                                needle: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAM_LEARNER_HMAC_KEY", raising=False)
    code, out = run(capsys, *argv)
    assert code == 2, out
    assert needle in out
    assert "Traceback" not in out


def test_unreachable_redis_is_a_runtime_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "models", "list", "--redis-url", "redis://127.0.0.1:1/0")
    assert code == 1
    assert "StoreUnavailable: Redis unreachable" in out and "Traceback" not in out


@pytest.mark.parametrize("argv", [["produce", "--dataset", "Phishing", "--limit", "3"],
                                  ["learn", "--hmac-key", "k"], ["serve", "--hmac-key", "k"]])
def test_unreachable_kafka_is_a_runtime_error_naming_the_flag_in_one_line(
        capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    started = time.monotonic()
    code, out = run(capsys, *argv, "--bootstrap-servers", "127.0.0.1:1", "--connect-timeout", "2")
    assert code == 1
    assert "--bootstrap-servers 127.0.0.1:1: no broker answered in 2 s" in out.strip().splitlines()[-1]
    assert "Traceback" not in out and time.monotonic() - started < 10


def test_no_broker_at_start_is_a_few_lines_not_a_flood() -> None:
    """As a user runs it: a process whose log goes to its stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_LEARNER_")}
    done = subprocess.run([sys.executable, "-m", "stream_learner.cli", "serve", "--hmac-key", "k",
                           "--bootstrap-servers", "127.0.0.1:1", "--connect-timeout", "4"],
                          capture_output=True, text=True, env=env, timeout=60)
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode == 1 and "no broker answered in 4 s" in lines[-1]
    assert len(lines) <= 6, lines  # the settings, each kind of librdkafka line once, the error


def test_produce_reads_datasets_and_files(tmp_path: Path) -> None:
    args = build_parser().parse_args(["produce", "--dataset", "Phishing", "--limit", "3",
                                      "--withhold-labels"])
    events = list(iter_events(load_settings(args), args))
    assert [k for k, _ in events] == ["Phishing-0", "Phishing-1", "Phishing-2"]
    assert all("y" not in doc for _, doc in events)

    file = tmp_path / "events.jsonl"
    file.write_text('{"x": {"a": 1}, "y": 2.0}\n\n{"id": "mine", "x": {"a": 2}}\n')
    args = build_parser().parse_args(["produce", "--file", str(file), "--repeat", "2"])
    keys = [k for k, _ in iter_events(load_settings(args), args)]
    assert keys == ["events-0", "mine", "events-0-r1", "mine"]

    file.write_text('{"x": {"a": 1}}\n{"key": "own", "x": {"a": 2}}\n{"x": {"a": 3}}\n')
    args = build_parser().parse_args(["produce", "--file", str(file), "--keys", "2"])
    events = list(iter_events(load_settings(args), args))
    assert [(k, doc["key"]) for k, doc in events] == [("key-0", "key-0"), ("own", "own"), ("key-0", "key-0")]

    file.write_text("{not json\n")
    with pytest.raises(Exception, match="1 malformed lines: nothing was sent"):
        list(iter_events(load_settings(args), args))


def test_produce_names_every_malformed_line_and_warns_of_what_will_be_dead_lettered(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "events.jsonl"
    good = '{"x": {"a": 1}, "y": true}'
    file.write_text("\n".join([good, "{not json", "[1, 2]", '{"x": {"a": NaN}}', good,
                               '{"x": {"a": 1e300}, "y": false}', *["nope"] * 30]) + "\n")
    code, out = run(capsys, "produce", "--file", str(file), "--bootstrap-servers", "127.0.0.1:1")
    assert code == 2
    lines = out.strip().splitlines()
    assert f"--file {file}: line 2 is not JSON" in lines[0] and "line 3 is not a JSON object" in lines[1]
    assert any("line 4: the service will dead-letter it (non_finite" in line for line in lines)
    assert any("line 6: the service will dead-letter it (out_of_range" in line for line in lines)
    assert f"--file {file}: ... 12 more malformed lines" in out
    assert lines[-1] == f"stream-learner produce: --file {file}: 32 malformed lines: nothing was sent"


def test_label_delay_follows_simulate_qa() -> None:
    from river import datasets, stream

    from stream_learner.cli import schedule

    args = build_parser().parse_args(["produce", "--dataset", "Phishing", "--limit", "40",
                                      "--labels-topic", "labels", "--label-delay", "7"])
    settings = load_settings(args)
    messages = schedule(settings, list(iter_events(settings, args)), 7)
    mine = [(doc["id"], "y" in doc) if topic == "labels" else (doc["id"], False)
            for topic, _, doc in messages]
    rows = list(datasets.Phishing())[:40]
    river_order = [(f"Phishing-{i}", y is not None) for i, _, y in stream.simulate_qa(rows, None, 7)]
    assert mine == river_order
    assert all("y" not in doc for topic, _, doc in messages if topic == "events")
