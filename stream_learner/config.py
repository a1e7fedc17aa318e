"""One validated, immutable settings object.

Every setting has a field here, a flag ``--name-with-dashes``, an environment variable
``STREAM_LEARNER_NAME`` and a key ``name`` in an optional TOML file. Precedence:
flags > environment > file > default. Values are validated once, at start-up, and the
error names the source that carried the bad value.

>>> s = Settings.load(env={"STREAM_LEARNER_CHECKPOINT_EVERY": "500"})
>>> s.checkpoint_every
500
>>> Settings.load(flags={"checkpoint_every": "0"})
Traceback (most recent call last):
...
stream_learner.errors.ConfigError: --checkpoint-every: must be at least 1, got 0
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stream_learner.errors import ConfigError
from stream_learner.events import FieldNames, Limits

ENV_PREFIX = "STREAM_LEARNER_"
KAFKA_MODES = "learn serve produce evaluate"
REDIS_MODES = "learn serve models"

TASKS = ("auto", "binary", "multiclass", "regression")
START_FROM = ("earliest", "latest")
KAFKA_CLIENTS = ("kafka-python", "librdkafka")
LOG_FORMATS = ("text", "json")
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
DEFAULT_DEAD_LETTER_TOPIC = "events.dlq"
# Numbers scaled, strings one-hot encoded, a logistic regression on both.
DEFAULT_SPEC = ("((compose.SelectType(int, float) | preprocessing.StandardScaler()) + "
                "(compose.SelectType(str) | preprocessing.OneHotEncoder())) | "
                "linear_model.LogisticRegression()")


def _opt(default: Any, help: str, *, choices: tuple[str, ...] = (), minimum: float | None = None,
         maximum: float | None = None, secret: bool = False,
         modes: str = "learn serve produce models", flag: str = "") -> Any:
    """A setting; a tuple ``default`` makes a list setting, its ``flag`` given once per item."""
    return field(default=default, metadata={
        "help": help, "choices": choices, "minimum": minimum, "maximum": maximum, "secret": secret,
        "modes": modes.split(), "flag": flag,
    })


@dataclass(frozen=True)
class Settings:
    """Everything the service can be told; see ``docs/configuration.md``."""

    # Where: Kafka
    bootstrap_servers: str = _opt("127.0.0.1:9092", "Kafka bootstrap servers, comma-separated.",
                                  modes=KAFKA_MODES)
    kafka_client: str = _opt("kafka-python", "Kafka client library: kafka-python (pure Python), or "
                             "librdkafka (confluent-kafka: the faster, docs/performance.md).",
                             choices=KAFKA_CLIENTS, modes=KAFKA_MODES)
    events_topic: str = _opt("events", "Topic the events are read from.", modes=KAFKA_MODES)
    predictions_topic: str = _opt("predictions", "Topic the predictions are published to.",
                                  modes="learn serve")
    dead_letter_topic: str = _opt("", "Topic that receives rejected events with the reason (empty: "
                                  f"{DEFAULT_DEAD_LETTER_TOPIC} for learn; a frozen predictor then "
                                  "counts and logs them, and writes none).",
                                  modes="learn serve")
    labels_topic: str = _opt("", "Topic of late labels {id, y} for events predicted earlier (empty: none).",
                             modes="learn produce evaluate")
    label_ttl: float = _opt(7 * 86400.0, "Seconds of event time an unlabelled event waits for its label.",
                            minimum=0.0, modes="learn evaluate")
    max_pending: int = _opt(100_000, "Most unlabelled events kept waiting; the oldest is evicted first.",
                            minimum=1, modes="learn evaluate")
    max_pending_bytes: int = _opt(256 * 1024 * 1024, "Most bytes of features kept for events waiting "
                                  "for a label (they are checkpointed too); the oldest is evicted "
                                  "first.", minimum=1024, modes="learn evaluate")
    default_label: str = _opt("", "JSON label learned when a waiting event expires (empty: drop it).",
                              modes="learn evaluate")
    group_id: str = _opt("", "Consumer group; default stream-learner.<model>.<learn|serve>.",
                         modes="learn serve")
    connect_timeout: float = _opt(15.0, "Seconds to wait at start for a first answer from the Kafka "
                                  "brokers before giving up (once running, they are waited for).",
                                  minimum=0.1, modes="learn serve produce evaluate")
    start_from: str = _opt("earliest", "Where to start when no checkpoint or commit exists.",
                           choices=START_FROM, modes="learn serve")
    security_protocol: str = _opt("PLAINTEXT", "Kafka security protocol.", choices=SECURITY_PROTOCOLS,
                                  modes=KAFKA_MODES)
    sasl_mechanism: str = _opt("", "Kafka SASL mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512).",
                               modes=KAFKA_MODES)
    sasl_username: str = _opt("", "Kafka SASL user name.", modes=KAFKA_MODES)
    sasl_password: str = _opt("", "Kafka SASL password.", secret=True, modes=KAFKA_MODES)
    ssl_cafile: str = _opt("", "CA file to verify the Kafka brokers' certificates.", modes=KAFKA_MODES)

    # Where: Redis
    redis_url: str = _opt("redis://127.0.0.1:6379/0",
                          "Redis URL for the model store (redis:// or rediss://, user:password@ allowed).",
                          secret=True, modes=REDIS_MODES)
    key_prefix: str = _opt("stream-learner", "Prefix of every Redis key the store writes.",
                           modes=REDIS_MODES)
    redis_timeout: float = _opt(5.0, "Seconds a Redis call may take before it counts as failed (and "
                                "is retried).", minimum=0.1, modes="learn serve models")

    # What: the model
    model: str = _opt("default", "Model name: the store keeps its versions under this name.",
                      modes=REDIS_MODES + " evaluate")
    model_spec: str = _opt(DEFAULT_SPEC, "River expression, or package.module:factory, building a "
                           "fresh model (docs/models.md).", modes="learn evaluate")
    task: str = _opt("auto", "binary, multiclass or regression; auto infers it from the model.",
                     choices=TASKS, modes="learn evaluate")
    rolling_window: int = _opt(1000, "Window of the rolling prequential metrics, in labelled events.",
                               minimum=1, modes="learn evaluate")
    max_features: int = _opt(100_000, "The model's feature budget: distinct features (a string "
                             "feature counts once per value) it learns from; past it, new ones are "
                             "dropped from events and counted.", minimum=1, modes="learn evaluate")
    max_classes: int = _opt(1000, "Most classes a multiclass model learns; a label beyond them is "
                            "dead-lettered (new_class).", minimum=2, modes="learn evaluate")
    max_model_errors: int = _opt(100, "Consecutive events the model raises on before the learner "
                                 "stops: the spec is broken, not the events.", minimum=1,
                                 modes="learn evaluate")
    challengers: tuple[str, ...] = _opt(
        (), "A challenger NAME=SPEC: a model learning from the same events beside the champion, in "
        "the same checkpoint (repeatable; a list in TOML, a JSON list in the environment).",
        modes="learn", flag="challenger")
    shadow_topic: str = _opt("", "Topic the challengers' predictions are published to (empty: none).",
                             modes="learn")
    promote_on: str = _opt("", "Promote a challenger by itself when this metric (e.g. LogLoss) over "
                           "the last --promote-window labelled events beats the champion's by "
                           "--promote-margin (empty: by hand only, models promote).", modes="learn")
    promote_margin: float = _opt(0.02, "How much better, relative (0.02: two percent), a challenger must be.",
                                 minimum=0.0, modes="learn")
    promote_min_events: int = _opt(5000, "Labelled events a challenger must have learned first.",
                                   minimum=1, modes="learn")
    promote_window: int = _opt(1000, "Labelled events the policy compares on: the last ones both were "
                               "scored on (at most --rolling-window).", minimum=1, modes="learn")
    audit_topic: str = _opt("", "Topic each promotion is published to, as its history entry (empty: "
                            "none).", modes="learn")
    publish_gate: str = _opt("", "Serve a new version to predictors only if this rolling metric (e.g. "
                             "LogLoss) is no worse than the served version's by --publish-margin "
                             "(empty: serve each).", modes="learn")
    publish_margin: float = _opt(0.0, "How much worse, relative, the gate lets a new version be.",
                                 minimum=0.0, modes="learn")
    drift_detector: str = _opt("", "A River drift detector (e.g. drift.ADWIN()) on the champion's "
                               "per-event error: 0/1 for a classifier, absolute for a regressor "
                               "(empty: none).", modes="learn")
    alerts_topic: str = _opt("", "Topic each drift alert is published to, as JSON (empty: none).",
                             modes="learn")
    on_drift: str = _opt("alert", "What a drift does besides the alert: start-challenger also starts "
                         "a fresh model of the champion's spec as a challenger.",
                         choices=("alert", "start-challenger"), modes="learn")

    # Backtests
    candidates: tuple[str, ...] = _opt(
        (), "A candidate NAME=SPEC that evaluate replays the events through (repeatable; a list in "
        "TOML, a JSON list in the environment; none: --model with --model-spec).",
        modes="evaluate", flag="candidate")
    labels_delay: int = _opt(0, "Hand each labelled event's label to the late-label join this many "
                             "events later, as river.stream.simulate_qa(delay=D) does (0: at once).",
                             minimum=0, modes="evaluate")

    # Event contract
    id_field: str = _opt("id", "Event field holding the event id.", modes="learn serve produce evaluate")
    key_field: str = _opt("key", "Event field holding the event key.", modes="learn serve produce evaluate")
    ts_field: str = _opt("ts", "Event field holding the event time (seconds).",
                         modes="learn serve produce evaluate")
    x_field: str = _opt("x", "Event field holding the features object.", modes="learn serve produce evaluate")
    y_field: str = _opt("y", "Event field holding the label.", modes="learn serve produce evaluate")
    max_event_bytes: int = _opt(1024 * 1024, "Larger messages are dead-lettered unread.", minimum=64,
                                modes="learn serve evaluate")
    max_abs_value: float = _opt(1e15, "Numbers (features, regression labels) beyond +/- this are "
                                "dead-lettered: finite but huge values overflow a model's statistics.",
                                minimum=1.0, maximum=1e18, modes="learn serve evaluate")
    max_event_features: int = _opt(1000, "Events with more features are dead-lettered.", minimum=1,
                                   modes="learn serve evaluate")
    max_string_chars: int = _opt(1024, "Longest id, key, feature name, string feature or label, in "
                                 "characters; longer ones are dead-lettered.", minimum=16,
                                 modes="learn serve evaluate")
    max_ts_ahead: float = _opt(3600.0, "Seconds an event's time may lie ahead of its Kafka timestamp; "
                               "further ahead it is dead-lettered, so that one event cannot move "
                               "event time (and expire the events waiting for labels).",
                               minimum=0.0, modes="learn serve evaluate")

    # Checkpoints
    checkpoint_every: int = _opt(10_000, "Checkpoint after this many events.", minimum=1,
                                 modes="learn")
    checkpoint_interval: float = _opt(30.0, "...or after this many seconds, whichever comes first.",
                                      minimum=0.01, modes="learn")
    checkpoint_inline_bytes: int = _opt(128 * 1024, "A model that pickles within this many bytes is "
                                        "pickled in the learning loop at a checkpoint; a larger one "
                                        "by a forked child (0: always fork).", minimum=0,
                                        modes="learn")
    lease_ttl: float = _opt(10.0, "Seconds a learner's writer lease lasts unless renewed; a standby "
                            "learner takes over once it expires.", minimum=0.5, modes="learn")
    instance_id: str = _opt("", "Name of this learner instance (empty: the host name, and a slot "
                            "per learner on the host). A restarted instance takes its own lease back "
                            "at once; other instances wait for it to expire.", modes="learn")
    session_timeout: float = _opt(10.0, "Kafka consumer group session timeout, seconds (the broker "
                                  "allows 6 to 300 by default).", minimum=1.0, modes="learn serve")
    keep_versions: int = _opt(5, "How many checkpoint versions the store keeps.", minimum=1,
                              modes="learn")
    hmac_key: str = _opt("", "Secret key signing checkpoints (HMAC-SHA256). Required.", secret=True,
                         modes="learn serve models")
    # Key scope
    model_scope: str = _opt("global", "One model for the stream (global), or one per event key, "
                            "owned by the partition the key's events are in (key: docs/scaling.md).",
                            choices=("global", "key"), modes="learn serve")
    key_prior: str = _opt("none", "What a key's model starts from: a fresh model (none), or a copy "
                          "of its partition's prior, a model learning from every event of the "
                          "partition (global).", choices=("none", "global"), modes="learn")
    key_cache_size: int = _opt(10_000, "Key models kept in memory (the least recently used leave "
                               "first; those changed since their checkpoint stay until it).",
                               minimum=1, modes="learn serve")
    key_metrics: tuple[str, ...] = _opt(
        (), "A key whose own prequential metrics the learner keeps and exports (repeatable, at most "
        "100; a list in TOML, a JSON list in the environment).", modes="learn", flag="key-metric")
    key_ttl: float = _opt(0.0, "Seconds of record time after a key's latest event when its model "
                          "expires: its next event starts a new one (0: never).", minimum=0.0,
                          modes="learn")
    allow_version_mismatch: bool = _opt(
        False, "Load checkpoints written by another River or Python minor version (pickles may "
        "not be portable: test before you rely on it).", modes="learn serve models")
    hmac_key_id: str = _opt("k1", "Name of the signing key, stored with each checkpoint.",
                            modes="learn serve models")
    model_packages: str = _opt("", "Packages (comma-separated), besides River, whose classes a "
                               "checkpoint may hold: that of a package.module:factory spec. A "
                               "learner trusts its own spec's package.", modes="learn serve models")

    # Frozen serving
    pin_version: int = _opt(0, "Serve this checkpoint version and never reload (0: latest, hot reload).",
                            minimum=0, modes="serve")
    wait_for_model: float = _opt(0.0, "Seconds to wait for a first checkpoint (0: fail at once).",
                                 minimum=0, modes="serve")

    # Consumer loop
    max_poll_records: int = _opt(500, "Records per poll batch.", minimum=1, modes="learn serve evaluate")
    # At most the learner's poll timeout, so that the loop still renews its lease, checks its
    # timers and sees a stop as often as when it blocks.
    busy_poll_ms: float = _opt(0.0, "Milliseconds the loop keeps asking for records, without "
                               "sleeping, once none are left, before it blocks, while it works "
                               "at least a third of the time (0: always block at once). Lower "
                               "latency near capacity where waking a sleeping thread is slow, "
                               "as on virtual machines, for up to a whole core while it lasts.",
                               minimum=0.0, maximum=100.0, modes="learn serve")
    progress_interval: float = _opt(10.0, "Seconds between the learner's progress lines (events/s, "
                                    "learned, dead letters, lag, version, a rolling metric).",
                                    minimum=1.0, modes="learn")
    http_host: str = _opt("127.0.0.1", "Address the HTTP server (metrics, health, dashboard, "
                          "predictions) listens on; 0.0.0.0 for all.", modes="learn serve")
    http_port: int = _opt(0, "Port of the HTTP server (0: no server).", minimum=0, maximum=65535,
                          modes="learn serve")
    http_token: str = _opt("", "Bearer token POST /predict requires (empty: none).", secret=True,
                           modes="serve")
    log_format: str = _opt("text", "Log lines as text, or as one JSON object each (for log shippers).",
                           choices=LOG_FORMATS, modes="learn serve produce models")
    commit_interval: float = _opt(5.0, "Seconds between offset commits to Kafka (a learner's are for "
                                  "lag monitoring only, and also made at revocation and shutdown).",
                                  minimum=0.01, modes="learn serve")

    def event_fields(self) -> FieldNames:
        return FieldNames(self.id_field, self.key_field, self.ts_field, self.x_field, self.y_field)

    def event_limits(self) -> Limits:
        return Limits(max_bytes=self.max_event_bytes, max_abs=self.max_abs_value,
                      max_features=self.max_event_features, max_string_chars=self.max_string_chars,
                      max_ts_ahead=self.max_ts_ahead)

    def dead_letters_to(self, mode: str) -> str:
        """Where ``mode`` (learn or serve) sends dead letters: nowhere ("") for a predictor not
        told, so that the learner and every predictor do not each write the same ones."""
        return self.dead_letter_topic or (DEFAULT_DEAD_LETTER_TOPIC if mode == "learn" else "")

    def signing_keys(self) -> dict[str, bytes]:
        return {self.hmac_key_id: self.hmac_key.encode()}

    def trusted_packages(self) -> frozenset[str]:
        """The packages whose classes this process unpickles besides River's (see unpickler)."""
        named = {p.strip() for p in self.model_packages.split(",") if p.strip()}
        if ":" in self.model_spec:
            named.add(self.model_spec.split(":")[0].split(".")[0])
        return frozenset(named)

    def challenger_specs(self) -> dict[str, str]:
        """The challengers' specs by name, in the order given."""
        return dict(item.split("=", 1) for item in self.challengers)

    def candidate_specs(self) -> dict[str, str]:
        """The candidates' specs by name, in the order given; none: ``--model`` with its spec."""
        return dict(item.split("=", 1) for item in self.candidates) or {self.model: self.model_spec}

    def consumer_group(self, mode: str) -> str:
        return self.group_id or f"stream-learner.{self.model}.{mode}"

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict with every secret masked, fit for logs."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata["secret"] and value:
                value = _redact_url(value) if f.name == "redis_url" else "***"
            out[f.name] = value
        return out

    @classmethod
    def load(cls, flags: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None,
             file: str | Path | None = None) -> Settings:
        """Merge the sources (flags > env > file > defaults) and validate every value."""
        return cls(**_merged(flags, os.environ if env is None else env, file))


def _merged(flags: Mapping[str, Any] | None, env: Mapping[str, str], file: str | Path | None
            ) -> dict[str, Any]:
    """The settings' values from their sources (flags > env > file), each validated."""
    raw: dict[str, tuple[Any, str]] = {}
    if file:
        for name, value in _read_toml(Path(file)).items():
            raw[name] = (value, f"{file}: key {name!r}")
    known = {f.name for f in dataclasses.fields(Settings)}
    for var, value in env.items():
        if var.startswith(ENV_PREFIX) and var != ENV_PREFIX + "CONFIG":
            name = var[len(ENV_PREFIX):].lower()
            if name not in known:
                raise ConfigError(f"{var}: unknown setting")
            raw[name] = (value, var)
    for name, value in (flags or {}).items():
        if value is not None:
            raw[name] = (value, flag_of(name))
    values = {}
    for f in dataclasses.fields(Settings):
        if f.name in raw:
            value, source = raw.pop(f.name)
            values[f.name] = _coerce(f, value, source)
    for name, (_, source) in raw.items():
        raise ConfigError(f"{source}: unknown setting {name!r}")
    return values


# The groups of options in --help, in order.
GROUPS: dict[str, tuple[str, ...]] = {
    "Kafka": ("bootstrap_servers", "kafka_client", "events_topic", "predictions_topic", "dead_letter_topic",
              "group_id", "start_from", "connect_timeout", "session_timeout", "commit_interval",
              "max_poll_records", "busy_poll_ms"),
    "Kafka security": ("security_protocol", "sasl_mechanism", "sasl_username", "sasl_password",
                       "ssl_cafile"),
    "Redis": ("redis_url", "key_prefix", "redis_timeout"),
    "the model": ("model", "model_spec", "task", "rolling_window", "max_features", "max_classes",
                  "max_model_errors", "model_packages"),
    "challengers and promotion": ("challengers", "shadow_topic", "promote_on", "promote_margin",
                                  "promote_min_events", "promote_window", "audit_topic"),
    "drift": ("drift_detector", "alerts_topic", "on_drift"),
    "key scope": ("model_scope", "key_prior", "key_cache_size", "key_ttl", "key_metrics"),
    "backtests": ("candidates", "labels_delay"),
    "events": ("id_field", "key_field", "ts_field", "x_field", "y_field", "max_event_bytes",
               "max_abs_value", "max_event_features", "max_string_chars", "max_ts_ahead"),
    "late labels": ("labels_topic", "label_ttl", "max_pending", "max_pending_bytes", "default_label"),
    "checkpoints": ("hmac_key", "checkpoint_every", "checkpoint_interval", "checkpoint_inline_bytes",
                    "keep_versions", "hmac_key_id", "allow_version_mismatch", "lease_ttl", "instance_id"),
    "serving": ("pin_version", "wait_for_model", "publish_gate", "publish_margin"),
    "watching it": ("http_host", "http_port", "http_token"),
    "logging": ("progress_interval", "log_format"),
}


def settings_fields() -> tuple[dataclasses.Field[Any], ...]:
    return dataclasses.fields(Settings)


def flag_of(name: str) -> str:
    """The command-line flag of a setting."""
    f = next((f for f in settings_fields() if f.name == name), None)
    return "--" + ((f.metadata["flag"] if f is not None else "") or name).replace("_", "-")


def env_var(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"--config {path}: no such file") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"--config {path}: cannot read it: {exc}") from None
    # Allow both a flat file and a [stream_learner] table.
    table = data.get("stream_learner", data)
    if not isinstance(table, dict):
        raise ConfigError(f"--config {path}: [stream_learner] must be a table")
    return table


def _coerce(f: dataclasses.Field[Any], value: Any, source: str) -> Any:
    kind: Any = type(f.default)
    if kind is tuple:
        items = _string_list(value, source)
        if f.name == "key_metrics":
            return tuple(dict.fromkeys(items))
        return _challengers(items, source, "candidate" if f.name == "candidates" else "challenger")
    try:
        if kind is bool:
            out: Any = _BOOLEANS[str(value).strip().lower()]
        elif kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            out = int(value)
        elif kind is float:
            if isinstance(value, bool):
                raise ValueError
            out = float(value)
        else:
            if not isinstance(value, str):
                raise ValueError
            out = value.strip()
    except (TypeError, ValueError, KeyError):
        raise ConfigError(f"{source}: expected {kind.__name__}, got {value!r}") from None
    minimum = f.metadata["minimum"]
    if minimum is not None and not out >= minimum:  # also rejects NaN
        shown = int(minimum) if float(minimum).is_integer() else minimum
        raise ConfigError(f"{source}: must be at least {shown}, got {value}")
    maximum = f.metadata["maximum"]
    if maximum is not None and not out <= maximum:
        raise ConfigError(f"{source}: must be at most {maximum:g}, got {value}")
    choices = f.metadata["choices"]
    if choices and out not in choices:
        raise ConfigError(f"{source}: must be one of {', '.join(choices)}, got {value!r}")
    return out


CHALLENGER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _string_list(value: Any, source: str) -> list[str]:
    """A list of strings, from a list (flags, TOML) or a JSON list (the environment)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ConfigError(f"{source}: expected a JSON list of strings, got {value!r}") from None
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{source}: expected a list of strings, got {value!r}")
    return list(value)


def _challengers(value: list[str], source: str, what: str = "challenger") -> tuple[str, ...]:
    """``NAME=SPEC`` items, each name once, none ``champion``. The specs are tried when the
    learner starts (``check_spec``)."""
    seen: set[str] = set()
    out = []
    for item in value:
        name, _, spec = item.partition("=")
        name, spec = name.strip(), spec.strip()
        if not CHALLENGER_NAME.fullmatch(name) or not spec:
            raise ConfigError(f"{source}: expected NAME=SPEC (a name of letters, digits, '.', '_' "
                              f"and '-'), got {item!r}")
        if name in seen or name == "champion":
            raise ConfigError(f"{source}: {what} name {name!r} is "
                              + ("given twice" if name in seen else "the champion's"))
        seen.add(name)
        out.append(f"{name}={spec}")
    return tuple(out)


_BOOLEANS = {"true": True, "1": True, "yes": True, "on": True,
             "false": False, "0": False, "no": False, "off": False}


def _redact_url(url: str) -> str:
    """The URL with the password masked, in its user info and in a ``password`` query
    parameter (which redis-py accepts too)."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    creds, at, host = netloc.rpartition("@")
    if at:
        user = creds.split(":", 1)[0] if ":" in creds else ""
        netloc = f"{user}:***@{host}"
    query = urllib.parse.urlencode([(k, "***" if k.lower() == "password" else v)
                                    for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)],
                                   safe="*")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))
