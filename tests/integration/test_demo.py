"""make demo and the local stack: they stop what they start, promptly, whatever happens."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaConsumer

from tests.integration.helpers import wait_for
from tools import localstack
from tools.localstack import ROOT, DevStack, KafkaBroker, free_port, free_port_pair, port_open


def stack_in(tmp_path: Path) -> DevStack:
    return DevStack(tmp_path / "stack", free_port(), free_port(), free_port())


def command(stack: DevStack, *argv: str) -> list[str]:
    return [*argv, "--kafka-port", str(stack.kafka_port), "--controller-port", str(stack.controller_port),
            "--redis-port", str(stack.redis_port)]


def nothing_left(stack: DevStack) -> bool:
    return (stack.pid("kafka") is None and stack.pid("redis") is None
            and not port_open(stack.kafka_port) and not port_open(stack.redis_port))


def demo(stack: DevStack, *, repeat: int = 1, rate: int = 2000) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_LEARNER_")}
    return subprocess.Popen(command(stack, sys.executable, "-m", "tools.demo", "--repeat", str(repeat),
                                    "--rate", str(rate), "--stack-dir", str(stack.directory), "--http-port",
                                    str(free_port_pair())),  # the learner's port, and the next
                            cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_the_demo_stops_everything_in_seconds_after_its_summary(tmp_path: Path) -> None:
    stack = stack_in(tmp_path)
    proc = demo(stack)
    assert proc.stdout is not None
    summary_at = None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("summary:"):
            summary_at = time.monotonic()
    proc.wait(60)
    assert proc.returncode == 0 and summary_at is not None, "".join(lines)
    assert time.monotonic() - summary_at < 15, "stopping the stack took too long"
    assert nothing_left(stack)


def test_ctrl_c_while_streaming_exits_cleanly_and_leaves_nothing_running(tmp_path: Path) -> None:
    stack = stack_in(tmp_path)
    proc = demo(stack, repeat=40, rate=10_000)  # still sending when interrupted: records in flight
    assert proc.stdout is not None
    for line in proc.stdout:
        if re.match(r"\s*\d+\.\d ", line):  # a progress line: the stream flows
            break
    interrupted = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out = proc.stdout.read()
    proc.wait(60)
    assert proc.returncode == 130 and "Traceback" not in out, out
    assert time.monotonic() - interrupted < 20
    assert nothing_left(stack)


def test_a_stack_up_killed_while_kafka_starts_is_found_and_stopped(tmp_path: Path) -> None:
    stack = stack_in(tmp_path)
    up = subprocess.Popen(command(stack, sys.executable, "tools/localstack.py", "up", "--dir",
                                  str(stack.directory)), cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    wait_for("the broker's process", lambda: stack.pid("kafka") is not None, timeout=60)
    up.kill()  # no chance to clean up: the broker runs on, detached
    up.wait(10)
    status = subprocess.run(command(stack, sys.executable, "tools/localstack.py", "status", "--dir",
                                    str(stack.directory)), cwd=ROOT, capture_output=True, text=True)
    assert "kafka: running" in status.stdout, status.stdout
    down = subprocess.run(command(stack, sys.executable, "tools/localstack.py", "down", "--dir",
                                  str(stack.directory)), cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert down.returncode == 0 and "kafka stopped" in down.stdout, down.stdout + down.stderr
    assert nothing_left(stack)


def test_the_stacks_topic_command_creates_the_partitions_asked_for(
        kafka: KafkaBroker, capsys: pytest.CaptureFixture[str], unique: Callable[[str], str]) -> None:
    port = kafka.bootstrap.rsplit(":", 1)[1]
    name = unique("readings")
    assert localstack.main(["topic", name, "--partitions", "4", "--kafka-port", port]) == 0
    assert capsys.readouterr().out.strip() == f"topic {name}: 4 partitions on {kafka.bootstrap}"
    consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap)
    try:
        assert consumer.partitions_for_topic(name) == {0, 1, 2, 3}
    finally:
        consumer.close()
    assert localstack.main(["topic", name, "--partitions", "4", "--kafka-port", port]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"localstack: topic {name}: it exists already"
    assert localstack.main(["topic", name, "--kafka-port", str(free_port())]) == 1
    assert "no broker on 127.0.0.1:" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        localstack.main(["topic", "--partitions", "4"])
    assert exited.value.code == 2 and "give a NAME" in capsys.readouterr().err


def test_the_stack_starts_again_on_other_ports_with_the_same_data(tmp_path: Path) -> None:
    first = stack_in(tmp_path)
    try:
        first.up()
    finally:
        first.down()
    again = stack_in(tmp_path)  # the same directory, new ports
    try:
        again.up()
        assert port_open(again.kafka_port) and port_open(again.redis_port)
    finally:
        again.down()
    assert nothing_left(again)
