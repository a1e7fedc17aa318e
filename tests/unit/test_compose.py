"""docker-compose.yml: valid for Debian's docker-compose, and configures only real settings."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import yaml

from stream_learner.cli import build_parser
from stream_learner.config import ENV_PREFIX, Settings, env_var, settings_fields
from tools.localstack import KAFKA_VERSION, ROOT


def compose_config(**env: str) -> subprocess.CompletedProcess[str]:
    assert shutil.which("docker-compose"), "make test installs Debian's docker-compose"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    return subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config"],
                          capture_output=True, text=True, cwd=ROOT, env={**clean, **env})


def test_compose_file_is_valid_and_its_service_settings_are_real() -> None:
    result = compose_config(STREAM_LEARNER_HMAC_KEY="test-key")
    assert result.returncode == 0, result.stderr
    compose: dict[str, Any] = yaml.safe_load(result.stdout)
    services = compose["services"]
    assert services["kafka"]["image"] == f"apache/kafka:{KAFKA_VERSION}"
    known = {env_var(f.name) for f in settings_fields()}
    for name in ("learner", "predictor", "producer"):
        service = services[name]
        env = {k: str(v) for k, v in service["environment"].items()}
        assert set(env) <= known, f"{name}: {set(env) - known} are not settings the service reads"
        settings = Settings.load(env=env)  # every value validates
        assert settings.bootstrap_servers == "kafka:9092" and settings.hmac_key == "test-key"
        args = build_parser().parse_args(service["command"])
        assert args.command in ("learn", "serve", "produce")
        assert service["build"]
    for name in ("kafka", "redis", "learner", "predictor"):
        assert services[name]["healthcheck"]["test"], name
    assert set(compose["volumes"]) == {"kafka-data", "redis-data"}
    # docs/guarantees.md: Redis must keep every acknowledged write.
    redis = services["redis"]["command"]
    assert redis[redis.index("--appendfsync") + 1] == "always" and "--appendonly" in redis


def test_compose_refuses_to_run_without_a_signing_key() -> None:
    result = compose_config()
    assert result.returncode != 0
    assert "STREAM_LEARNER_HMAC_KEY" in result.stderr
