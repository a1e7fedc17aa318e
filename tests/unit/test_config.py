from __future__ import annotations

import re
from pathlib import Path

import pytest

from stream_learner.config import Settings
from stream_learner.errors import ConfigError


def test_flags_beat_env_beat_file_beat_defaults(tmp_path: Path) -> None:
    file = tmp_path / "s.toml"
    file.write_text('[stream_learner]\nmodel = "from-file"\nevents_topic = "file-topic"\nkeep_versions = 3\n')
    env = {"STREAM_LEARNER_MODEL": "from-env", "STREAM_LEARNER_EVENTS_TOPIC": "env-topic"}
    s = Settings.load(flags={"model": "from-flag"}, env=env, file=file)
    assert (s.model, s.events_topic, s.keep_versions, s.predictions_topic) == (
        "from-flag", "env-topic", 3, "predictions")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"flags": {"checkpoint_interval": "soon"}}, "--checkpoint-interval: expected float, got 'soon'"),
    ({"flags": {"start_from": "middle"}}, "--start-from: must be one of earliest, latest"),
    ({"env": {"STREAM_LEARNER_KEEP_VERSIONS": "0"}}, "STREAM_LEARNER_KEEP_VERSIONS: must be at least 1"),
    ({"env": {"STREAM_LEARNER_NOPE": "1"}}, "STREAM_LEARNER_NOPE: unknown setting"),
    ({"env": {"STREAM_LEARNER_CHECKPOINT_INTERVAL": "nan"}}, "must be at least 0.01, got nan"),
    ({"env": {"STREAM_LEARNER_MAX_ABS_VALUE": "1e19"}}, "MAX_ABS_VALUE: must be at most 1e+18"),
    ({"flags": {"busy_poll_ms": "250"}}, "--busy-poll-ms: must be at most 100, got 250"),
])
def test_errors_name_their_source(kwargs: dict[str, dict[str, str]], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        Settings.load(flags=kwargs.get("flags"), env=kwargs.get("env", {}))


def test_file_errors_name_the_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("keep_versions = 'many'\n")
    with pytest.raises(ConfigError, match=r"bad.toml: key 'keep_versions': expected int"):
        Settings.load(env={}, file=bad)
    bad.write_text("nonsense = [\n")
    with pytest.raises(ConfigError, match=r"--config .*bad.toml: cannot read it"):
        Settings.load(env={}, file=bad)
    with pytest.raises(ConfigError, match="no such file"):
        Settings.load(env={}, file=tmp_path / "missing.toml")


def test_secrets_are_redacted() -> None:
    s = Settings.load(env={}, flags={"hmac_key": "s3cret", "sasl_password": "pw",
                                     "redis_url": "redis://app:hunter2@db:6379/0"})
    shown = str(s.redacted())
    assert "s3cret" not in shown and "hunter2" not in shown and "'pw'" not in shown
    assert "redis://app:***@db:6379/0" in shown
    for url in ("redis://db:6379/0?password=hunter2", "rediss://db/0?ssl_cert_reqs=none&Password=hunter2",
                "redis://:hunter2@db:6379?password=hunter2&db=1"):
        shown = str(Settings(redis_url=url).redacted())
        assert "hunter2" not in shown and "***" in shown, shown
    assert "db=1" in str(Settings(redis_url="redis://db?password=x&db=1").redacted())


def test_settings_are_immutable() -> None:
    s = Settings()
    with pytest.raises(AttributeError):
        s.model = "other"  # type: ignore[misc]


def test_a_predictor_writes_dead_letters_only_where_it_is_told() -> None:
    assert Settings().dead_letters_to("learn") == "events.dlq"
    assert Settings().dead_letters_to("serve") == ""
    told = Settings(dead_letter_topic="served.dlq")
    assert told.dead_letters_to("serve") == told.dead_letters_to("learn") == "served.dlq"
