"""One writer per model: a fenced zombie, a standby that takes over, the fence inside Redis."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from stream_learner.checkpoint import Record
from stream_learner.config import Settings
from stream_learner.engine import id_hash
from stream_learner.errors import FencedError
from stream_learner.state.redis import RedisStore
from tests.integration.helpers import (
    load_checkpoint,
    make_settings,
    phishing,
    produce,
    wait_for,
    wait_learned,
)
from tools.events import event_bytes
from tools.localstack import KafkaBroker, RedisServer
from tools.service import service_env, spawn


class Learn:
    """``stream-learner learn`` as a process whose log the test can read while it runs."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self.log_path = log
        self.proc = spawn("learn", service_env(settings), stdout=log)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def says(self, text: str) -> bool:
        return text in self.log()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


def digest(ids: list[str]) -> int:
    return sum(id_hash(i) for i in ids) % 2**64


def test_the_fence_is_checked_inside_redis(redis_server: RedisServer, unique: Callable[[str], str]) -> None:
    store = RedisStore(redis_server.url, unique("p"))
    zombie = store.acquire("m", ttl=0.2, owner="host-a")
    assert zombie is not None and store.acquire("m", ttl=10, owner="host-b") is None
    store.save("m", 1, Record(b"{}", b"x" * 10, "s"), zombie, keep=2)
    successor = wait_for("the lease to expire", lambda: store.acquire("m", ttl=10, owner="host-b"),
                         timeout=10)
    with pytest.raises(FencedError, match="stale"):
        store.save("m", 2, Record(b"{}", b"zombie", "s"), zombie, keep=2)
    with pytest.raises(FencedError):
        store.renew("m", zombie, ttl=10, owner="host-a")
    store.save("m", 2, Record(b"{}", b"successor", "s"), successor, keep=2)
    assert store.load("m").payload == b"successor"
    store.close()


def test_a_paused_learner_is_fenced_when_it_wakes(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
    topic: Callable[..., str], tmp_path: Path, kafka_client: str,
) -> None:
    rows = phishing()
    settings = make_settings(kafka, redis_server, unique, events_topic=topic("events"), lease_ttl=2.0,
                             checkpoint_every=100, checkpoint_interval=0.2, kafka_client=kafka_client)
    messages = event_bytes(rows)
    produce(kafka.bootstrap, settings.events_topic, messages[:400])
    a = Learn(replace(settings, instance_id="host-a"), tmp_path / "a.log")
    wait_learned(settings, 400)
    a.proc.send_signal(signal.SIGSTOP)
    try:
        b = Learn(replace(settings, instance_id="host-b"), tmp_path / "b.log")
        wait_for("B to take over after A's lease expired", lambda: b.says("took the writer lease"), 30)
        produce(kafka.bootstrap, settings.events_topic, messages[400:800])
        taken_over = wait_learned(settings, 800)
        assert taken_over.token > load_checkpoint(settings, 1).meta.token
    finally:
        a.proc.send_signal(signal.SIGCONT)
    produce(kafka.bootstrap, settings.events_topic, messages[800:])  # A wakes to new work
    assert a.proc.wait(60) == 1
    assert "FencedError" in a.log() and "another learner took over" in a.log(), a.log()[-2000:]

    final = wait_learned(settings, len(rows))
    assert final.token == taken_over.token, "the store must hold B's versions only"
    assert final.learned == len(rows)
    assert final.learned_digest == digest([f"e-{i}" for i in range(len(rows))])
    assert b.stop() == 0


def test_a_standby_learner_takes_over_when_the_leader_dies(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
    topic: Callable[..., str], tmp_path: Path, kafka_client: str,
) -> None:
    rows = phishing()
    settings = make_settings(kafka, redis_server, unique, events_topic=topic("events", partitions=2),
                             lease_ttl=2.0, checkpoint_interval=0.2, kafka_client=kafka_client)
    produce(kafka.bootstrap, settings.events_topic, event_bytes(rows[:600]))
    first = Learn(replace(settings, instance_id="host-1"), tmp_path / "1.log")
    second = Learn(replace(settings, instance_id="host-2"), tmp_path / "2.log")
    wait_learned(settings, 600)
    leader, standby = (first, second) if first.says("took the writer lease") else (second, first)
    wait_for("the other one to wait as a standby", lambda: standby.says("standby"), 30)
    assert not standby.says("took the writer lease")

    leader.proc.kill()
    killed_at = time.monotonic()
    wait_for("the standby to take over", lambda: standby.says("took the writer lease"), 30)
    takeover = time.monotonic() - killed_at
    assert takeover < settings.lease_ttl + 5, f"took {takeover:.1f} s"

    produce(kafka.bootstrap, settings.events_topic, event_bytes(rows[600:], start=600))
    meta = wait_learned(settings, len(rows))
    assert meta.learned == len(rows)
    assert meta.learned_digest == digest([f"e-{i}" for i in range(len(rows))])
    assert standby.stop() == 0
    print(json.dumps({"standby_takeover_seconds": round(takeover, 2)}))


def test_two_learners_on_one_host_are_two_instances_and_a_restart_takes_its_lease_back_at_once(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
    topic: Callable[..., str], tmp_path: Path,
) -> None:
    rows = phishing()
    settings = make_settings(kafka, redis_server, unique, events_topic=topic("events"), lease_ttl=60.0,
                             checkpoint_interval=0.2)
    assert settings.instance_id == ""  # the default: the host name, and a slot on the host
    produce(kafka.bootstrap, settings.events_topic, event_bytes(rows[:600]))
    first = Learn(settings, tmp_path / "1.log")
    wait_learned(settings, 600)
    second = Learn(settings, tmp_path / "2.log")
    wait_for("the second learner to wait as a standby", lambda: second.says("standby"), 30)
    assert first.says("took the writer lease") and not second.says("took the writer lease")
    assert first.proc.poll() is None, "the second learner must not fence the first"

    first.proc.kill()
    first.proc.wait(10)
    restarted = Learn(settings, tmp_path / "3.log")
    killed_at = time.monotonic()
    wait_for("the restart to take its lease back", lambda: restarted.says("took the writer lease"), 30)
    assert time.monotonic() - killed_at < settings.lease_ttl / 2, "it waited for the lease to expire"
    assert second.says("standby") and not second.says("took the writer lease")
    produce(kafka.bootstrap, settings.events_topic, event_bytes(rows[600:], start=600))
    meta = wait_learned(settings, len(rows))
    assert meta.learned_digest == digest([f"e-{i}" for i in range(len(rows))])
    assert restarted.stop() == 0
    assert second.stop() == 0
