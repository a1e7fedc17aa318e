"""``stream-learner``: the composition root, and the only place that reads flags and env.

Exit codes: 0 success, 2 usage or configuration error (the message names the flag,
variable or file key), 1 runtime failure. Expected errors print one line, no traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.metadata
import json
import logging
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stream_learner.config import ENV_PREFIX, GROUPS, Settings, env_var, flag_of, settings_fields
from stream_learner.errors import ConfigError, StreamLearnerError

if TYPE_CHECKING:
    from consumers.clients.base import Clients
    from stream_learner.observe.board import Board
    from stream_learner.observe.predict import Serving

log = logging.getLogger("stream_learner")

COMMANDS = {
    "learn": "Consume events, predict, publish, learn, checkpoint (one learner per model).",
    "serve": "Frozen predictor: load a checkpoint, predict and publish, hot-reload new versions.",
    "produce": "Replay a bundled River dataset or a JSONL file into the events topic.",
    "evaluate": "Backtest candidate specs on a topic range or a JSONL file: a leaderboard.",
    "models": "The models in the store: their versions and history; promote, serve, roll back, tag, "
              "export, import or reset one.",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse's own usage errors: exit 2, no traceback
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


DESCRIPTION = ("Online machine learning on a Kafka event stream with River: predict, publish, learn, "
               "and checkpoint the model to Redis with the offsets it has consumed.")
EPILOG = (f"Every option is also an environment variable {ENV_PREFIX}<NAME> (--checkpoint-every: "
          f"{env_var('checkpoint_every')}) and a key of a TOML file given with --config; flags win, "
          "then the environment, then the file.")
LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"]
REQUIRED = {"learn": ("hmac_key",), "serve": ("hmac_key",)}  # shown first in their --help
MODEL_ACTIONS = {
    "list": "the models, or with --model its versions", "show": "a version's header",
    "history": "the model's promotions and rollbacks", "promote": "a challenger, at the next checkpoint",
    "serve": "hold predictors on --version V, or --follow the learner", "rollback": "go on from --to V",
    "tag": "keep VERSION under --tag NAME", "untag": "remove --tag NAME",
    "export": "VERSION to a signed --file", "import": "a --file as the next version",
    "reset": "delete every version (--yes)",
}
COMMAND_ARGS = {"models": "ACTION [VERSION] ", "evaluate": "--candidate NAME=SPEC ... ",
                "produce": "(--dataset NAME | --file FILE) "}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="stream-learner", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"stream-learner {_version()}")
    parser.add_argument("--log-level", choices=LOG_LEVELS, help=f"Log verbosity (default INFO; also "
                        f"{env_var('log_level')}, and after the command).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")
    fields = {f.name: f for f in settings_fields()}
    for command, help_text in COMMANDS.items():
        usage = f"stream-learner {command} {COMMAND_ARGS.get(command, '')}[options]"
        p = sub.add_parser(command, help=help_text, description=help_text, epilog=EPILOG, usage=usage)
        required = REQUIRED.get(command, ())
        for title, names in {"required": required, **GROUPS}.items():
            used = [fields[n] for n in names if command in fields[n].metadata["modes"]
                    and (title == "required" or n not in required)]
            if used:
                group = p.add_argument_group(title)
                for f in used:
                    _add_setting(group, f)
        general = p.add_argument_group("general")
        general.add_argument("--config", metavar="FILE", default=os.environ.get(env_var("config")),
                             help=f"TOML file of settings (also {env_var('config')}).")
        general.add_argument("--log-level", choices=LOG_LEVELS, default=argparse.SUPPRESS,
                             help="Log verbosity (default INFO).")
        _add_command_options(command, p)
    return parser


def _add_setting(group: Any, f: Any) -> None:
    choices = f"; one of {', '.join(f.metadata['choices'])}" if f.metadata["choices"] else ""
    kind = type(f.default)
    value_options: dict[str, Any] = (
        {"action": "store_const", "const": "true"} if kind is bool
        else {"action": "append", "metavar": "KEY" if f.name == "key_metrics" else "NAME=SPEC"}
        if kind is tuple
        else {"metavar": kind.__name__.upper()})
    if f.metadata["secret"]:
        shown = Settings().redacted()[f.name]
        default = f" (default {shown})" if shown else ""
    elif kind is bool or f.default in ("", 0, ()):
        default = ""
    else:
        default = f" (default {f.default})"
    group.add_argument(flag_of(f.name), dest=f.name, default=None, **value_options,
                       help=f"{f.metadata['help']}{choices}{default}")


def _add_command_options(command: str, p: argparse.ArgumentParser) -> None:
    if command == "produce":
        data = p.add_argument_group("what to produce")
        source = data.add_mutually_exclusive_group(required=True)
        source.add_argument("--dataset", help="Bundled River dataset: Phishing, Bananas, "
                                              "TrumpApproval, ImageSegments, ...")
        source.add_argument("--file", type=Path, help="JSONL file, one event per line.")
        data.add_argument("--limit", type=int, default=0, help="Stop after this many events (0: all).")
        data.add_argument("--repeat", type=int, default=1, help="Replay the data this many times.")
        data.add_argument("--withhold-labels", action="store_true", help="Send events without y.")
        data.add_argument("--keys", type=int, default=0, metavar="N",
                          help="Give each event without a key one of N keys, key-0 to key-<N-1> in turn "
                               "(for a key-scope model; 0: none).")
        data.add_argument("--label-delay", type=int, metavar="D",
                          help="Send each label to --labels-topic D events after its event (which goes "
                               "without it), as river.stream.simulate_qa(delay=D) orders them.")
    if command == "evaluate":
        _add_evaluate_options(p)
    if command == "models":
        p.add_argument("action", choices=list(MODEL_ACTIONS), metavar="ACTION",
                       help="; ".join(f"{a}: {h}" for a, h in MODEL_ACTIONS.items()))
        p.add_argument("version", nargs="?", type=int, default=0, metavar="VERSION",
                       help="Version (default latest).")
        what = p.add_argument_group("what to act on")
        what.add_argument("--challenger", metavar="NAME", help="The challenger to promote.")
        what.add_argument("--version", dest="serve_version", type=int, metavar="V",
                          help="The version to serve.")
        what.add_argument("--follow", action="store_true", help="Serve the learner's versions again.")
        what.add_argument("--to", type=int, metavar="V", help="The version to roll back to.")
        what.add_argument("--tag", metavar="NAME", help="The tag to set or remove.")
        what.add_argument("--file", metavar="FILE", help="The file to export to or import from.")
        what.add_argument("--reason", metavar="TEXT", help="Why, for the history.")
        what.add_argument("--yes", action="store_true", help="Confirm a reset.")


def _add_evaluate_options(p: argparse.ArgumentParser) -> None:
    data = p.add_argument_group("what to replay (docs/backtests.md)")
    data.add_argument("--file", type=Path, help="JSONL file, one event per line (instead of --events-topic).")
    data.add_argument("--from-offset", metavar="N|P:N,...",
                      help="First offset, of every partition or of each named one (default: the start).")
    data.add_argument("--to-offset", metavar="N|P:N,...", help="End offset, excluded (default: where each "
                      "partition ends when the read starts).")
    data.add_argument("--from-time", metavar="TIME", help="First record time, ISO-8601 (UTC unless it says) "
                      "or epoch ms: from Kafka's offsets-for-times.")
    data.add_argument("--to-time", metavar="TIME", help="End time, excluded.")
    out = p.add_argument_group("the leaderboard")
    out.add_argument("--rank-by", default="", metavar="METRIC", help="Metric to rank by, e.g. LogLoss or "
                     "Accuracy@1000 (default: the task's first, Accuracy or MAE).")
    out.add_argument("--format", choices=["table", "json"], default="table", help="A table, or JSON.")


def _version() -> str:
    try:
        return importlib.metadata.version("stream-learner")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def load_settings(args: argparse.Namespace) -> Settings:
    names = {f.name for f in settings_fields()}
    flags = {k: v for k, v in vars(args).items() if k in names}
    return Settings.load(flags=flags, file=args.config)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = args.log_level or os.environ.get(env_var("log_level"), "INFO").upper()
    if level not in LOG_LEVELS:
        print(f"stream-learner: {env_var('log_level')}: must be one of {', '.join(LOG_LEVELS)}, "
              f"got {level!r}", file=sys.stderr)
        return 2
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    try:
        settings = load_settings(args)
        if settings.log_format == "json":
            from stream_learner.observe.logs import JsonFormatter

            for handler in logging.getLogger().handlers:
                handler.setFormatter(JsonFormatter())
        return int(_COMMANDS[args.command](settings, args) or 0)
    except ConfigError as exc:
        print(f"stream-learner {args.command}: {exc}", file=sys.stderr)
        return 2
    except StreamLearnerError as exc:
        print(f"stream-learner {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def _require_key(settings: Settings) -> None:
    if not settings.hmac_key:
        raise ConfigError(f"--hmac-key (or {env_var('hmac_key')}) is required: checkpoints are signed")


def _store(settings: Settings) -> Any:
    from stream_learner.state.redis import RedisStore

    return RedisStore.for_settings(settings)


def _freeze_heap() -> None:
    """Leave what is alive now (River, SciPy and the service's modules) out of garbage
    collections: it lives as long as the process, and a full collection over it would stop the
    learning loop for tens of milliseconds."""
    gc.collect()
    gc.freeze()


def cmd_learn(settings: Settings, _args: argparse.Namespace) -> int:
    from consumers.key_learner import KeyLearner
    from consumers.learner import Learner
    from stream_learner.state.keyed_redis import RedisKeyedStore

    _require_key(settings)
    _check_learn(settings)
    log.info("learn: settings %s", settings.redacted())
    clients = _clients(settings)
    learner: Learner | KeyLearner
    if settings.model_scope == "key":
        learner = KeyLearner(settings, RedisKeyedStore.for_settings(settings), clients)
    else:
        learner = Learner(settings, _store(settings), clients)
    stop = _stop_on_signals()
    with _http(settings, learner.board):
        _freeze_heap()
        learner.run(stop)
    return 0


def _check_learn(s: Settings) -> None:
    """What fails before any I/O: a wrong spec (a challenger does the champion's task), a
    policy on a metric the learner does not keep, a topic written for two purposes."""
    from stream_learner.drift import build_detector
    from stream_learner.models import check_spec, infer_task
    from stream_learner.promotion import metric_names

    task = infer_task(check_spec(s.model_spec, s.task), s.task)
    if s.model_scope == "key":
        _check_key_scope(s)
    else:
        _check_global_scope(s)
    for name, spec in s.challenger_specs().items():
        check_spec(spec, task, flag=f"--challenger {name}")
    if s.drift_detector:
        build_detector(s.drift_detector, task)
    elif s.alerts_topic or s.on_drift != "alert":
        raise ConfigError("--alerts-topic and --on-drift need a --drift-detector")
    for flag, metric in (("--promote-on", s.promote_on), ("--publish-gate", s.publish_gate)):
        if metric and metric not in metric_names(task):
            raise ConfigError(f"{flag} {metric}: not a metric of a {task} model; one of "
                              + ", ".join(metric_names(task)))
    if s.promote_window > s.rolling_window:
        raise ConfigError(f"--promote-window {s.promote_window}: more than --rolling-window "
                          f"{s.rolling_window}, the labelled events the learner keeps scores of")
    used = {s.events_topic, s.predictions_topic, s.labels_topic, s.dead_letters_to("learn")}
    for flag, topic in (("--shadow-topic", s.shadow_topic), ("--audit-topic", s.audit_topic),
                        ("--alerts-topic", s.alerts_topic)):
        if topic and topic in used:
            raise ConfigError(f"{flag} {topic}: the learner reads or writes it already; it needs a "
                              "topic of its own")
        used.add(topic)


def _check_key_scope(s: Settings) -> None:
    """What key scope does not do (docs/scaling.md): one line naming the first such flag."""
    if len(s.key_metrics) > 100:
        raise ConfigError(f"--key-metric: {len(s.key_metrics)} keys, more than 100")
    for flag, value in (("--challenger", s.challengers), ("--labels-topic", s.labels_topic),
                        ("--drift-detector", s.drift_detector), ("--promote-on", s.promote_on),
                        ("--publish-gate", s.publish_gate), ("--shadow-topic", s.shadow_topic),
                        ("--audit-topic", s.audit_topic), ("--alerts-topic", s.alerts_topic),
                        ("--on-drift", s.on_drift != "alert")):
        if value:
            raise ConfigError(f"{flag}: not with --model-scope key (one model per key; docs/scaling.md)")


def _check_global_scope(s: Settings) -> None:
    """The key-scope options mean nothing to one global model: refused rather than ignored."""
    for flag, value in (("--key-metric", s.key_metrics), ("--key-prior", s.key_prior != "none"),
                        ("--key-ttl", s.key_ttl != 0.0)):
        if value:
            raise ConfigError(f"{flag}: only with --model-scope key")


def cmd_serve(settings: Settings, _args: argparse.Namespace) -> int:
    from consumers.key_predictor import KeyPredictor
    from consumers.predictor import Predictor
    from stream_learner.state.keyed_redis import RedisKeyedStore

    _require_key(settings)
    if settings.model_scope == "key" and settings.pin_version:
        raise ConfigError("--pin-version: not with --model-scope key (each partition has its versions)")
    log.info("serve: settings %s", settings.redacted())
    clients = _clients(settings)
    predictor: Predictor | KeyPredictor
    if settings.model_scope == "key":
        predictor = KeyPredictor(settings, RedisKeyedStore.for_settings(settings), clients)
    else:
        predictor = Predictor(settings, _store(settings), clients)
    stop = _stop_on_signals()
    with _http(settings, predictor.board, serving=lambda: predictor.serving):
        _freeze_heap()
        predictor.run(stop)
    return 0


@contextlib.contextmanager
def _http(settings: Settings, board: Board, serving: Serving | None = None) -> Iterator[None]:
    """The process's HTTP server (``--http-port``), while the loop runs; ``serving``: the
    engine and version that ``POST /predict`` answers with."""
    if not settings.http_port:
        yield
        return
    from stream_learner.observe.exposition import Exposition
    from stream_learner.observe.predict import HttpPredict
    from stream_learner.observe.server import HttpServer

    exposition = Exposition(board)
    predict = None if serving is None else HttpPredict(
        settings.model, settings.event_fields(), settings.event_limits(), serving,
        counted=exposition.predict_events.inc)
    with HttpServer(board, exposition, host=settings.http_host, port=settings.http_port, predict=predict,
                    token=settings.http_token):
        yield


def kafka_clients(settings: Settings) -> Clients:
    """The Kafka clients of ``--kafka-client``."""
    if settings.kafka_client == "librdkafka":
        from consumers.clients.librdkafka import LibrdkafkaClients
        return LibrdkafkaClients(settings)
    from consumers.clients.kafka_python import KafkaPythonClients
    return KafkaPythonClients(settings)


def _clients(settings: Settings) -> Clients:
    """The Kafka clients of ``--kafka-client``, once a broker has answered."""
    clients = kafka_clients(settings)
    clients.require_broker()
    return clients


def _stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT, so the loop can finish its batch and checkpoint."""
    stop = threading.Event()

    def handler(signum: int, _frame: Any) -> None:
        log.info("received %s: stopping after this batch", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def cmd_produce(settings: Settings, args: argparse.Namespace) -> int:
    from consumers.clients.base import Delivery

    if args.limit < 0:
        raise ConfigError(f"--limit: must be at least 0, got {args.limit}")
    if args.repeat < 1:
        raise ConfigError(f"--repeat: must be at least 1, got {args.repeat}")
    if args.keys < 0:
        raise ConfigError(f"--keys: must be at least 0, got {args.keys}")
    if args.label_delay is not None and (args.label_delay < 0 or not settings.labels_topic):
        raise ConfigError("--label-delay: needs --labels-topic and a delay of at least 0 events")
    messages = schedule(settings, list(iter_events(settings, args)), args.label_delay)  # fails before I/O
    clients = _clients(settings)
    producer = clients.producer("stream-learner-produce")
    failures: list[str] = []

    def delivered(delivery: Delivery) -> None:
        if delivery.error is not None:
            failures.append(delivery.error)

    base_ms = int(time.time() * 1000)
    for seq, (topic, key, doc) in enumerate(messages):
        # Timestamps one millisecond apart keep the event/label order across the two topics.
        producer.send(topic, json.dumps(doc, default=_plain).encode(), key.encode(), on_delivery=delivered,
                      timestamp_ms=base_ms + seq)
    if producer.flush(120):
        failures.append("not sent within 120 s")
    if failures:
        raise StreamLearnerError(f"{len(failures)} of {len(messages)} messages were not acknowledged: "
                                 f"{failures[0]}")
    labels = sum(1 for topic, _, _ in messages if topic == settings.labels_topic)
    print(f"produced {len(messages) - labels} events to {settings.events_topic}"
          + (f" and {labels} labels to {settings.labels_topic}" if labels else ""))
    return 0


def schedule(settings: Settings, events: list[tuple[str, dict[str, Any]]], delay: int | None
             ) -> list[tuple[str, str, dict[str, Any]]]:
    """(topic, key, document) in sending order. With a label delay D, each event goes out
    without its label, which follows on the labels topic once D more events were sent (the
    order of ``river.stream.simulate_qa`` with ``delay=D``)."""
    if delay is None:
        return [(settings.events_topic, key, doc) for key, doc in events]
    out: list[tuple[str, str, dict[str, Any]]] = []
    due: deque[tuple[int, str, Any]] = deque()  # (event index, event id, label)

    def label(event_id: str, y: Any) -> tuple[str, str, dict[str, Any]]:
        return settings.labels_topic, event_id, {settings.id_field: event_id, settings.y_field: y}

    for i, (key, doc) in enumerate(events):
        while due and due[0][0] + delay <= i:
            out.append(label(*due.popleft()[1:]))
        event = dict(doc)
        if settings.y_field in event:
            due.append((i, str(event[settings.id_field]), event.pop(settings.y_field)))
        out.append((settings.events_topic, key, event))
    out.extend(label(event_id, y) for _, event_id, y in due)
    return out


def iter_events(settings: Settings, args: argparse.Namespace) -> Iterator[tuple[str, dict[str, Any]]]:
    """(record key, document) for each event to produce, validated before anything is sent: the
    record key is the event's key (``--keys``: given to those without one), or its id."""
    rows = list(_dataset_rows(args.dataset) if args.dataset else _file_rows(args.file, settings))
    name = args.dataset or args.file.stem
    produced = 0
    for rep in range(args.repeat):
        for i, doc in enumerate(rows):
            if args.limit and produced >= args.limit:
                return
            doc = dict(doc)
            doc.setdefault(settings.id_field, f"{name}-{i}" + (f"-r{rep}" if rep else ""))
            if args.withhold_labels:
                doc.pop(settings.y_field, None)
            if args.keys:
                doc.setdefault(settings.key_field, f"key-{produced % args.keys}")
            produced += 1
            key = doc.get(settings.key_field)  # a key's events in one partition, in order
            yield (key if isinstance(key, str) else str(doc[settings.id_field])), doc


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _dataset_rows(name: str) -> Iterator[dict[str, Any]]:
    from river import datasets

    cls = getattr(datasets, name, None)
    if not isinstance(cls, type) or not issubclass(cls, datasets.base.Dataset):
        raise ConfigError(f"--dataset: {name!r} is not a River dataset")
    if issubclass(cls, datasets.base.RemoteDataset):
        raise ConfigError(f"--dataset: {name!r} must be downloaded; use a bundled one (e.g. Phishing)")
    for x, y in cls():
        yield {"x": x, "y": y}


SHOWN_LINES = 20  # malformed lines named before the rest are only counted


def _file_rows(path: Path, settings: Settings) -> list[dict[str, Any]]:
    """The file's events. Every malformed line is named (the first ``SHOWN_LINES``), and then
    nothing is sent; an event the service will dead-letter is warned of, and sent all the same."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--file {path}: cannot read it: {exc}") from None
    rows, malformed, refused = [], [], []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except ValueError as exc:
            malformed.append(f"line {n} is not JSON: {exc}")
            continue
        if not isinstance(doc, dict):
            malformed.append(f"line {n} is not a JSON object")
            continue
        reason = _refusal(line.encode(), settings)
        if reason:
            refused.append(f"line {n}: the service will dead-letter it ({reason})")
        rows.append(doc)
    _report(path, malformed, "malformed lines")
    _report(path, refused, "events the service will dead-letter (sent all the same)")
    if malformed:
        raise ConfigError(f"--file {path}: {len(malformed)} malformed lines: nothing was sent")
    return rows


def _refusal(raw: bytes, settings: Settings) -> str:
    """Why the service's decoder refuses this event, whatever the model's task ("" if it
    does not): the label is left to the learner, which knows the task."""
    from stream_learner.errors import InvalidEvent
    from stream_learner.events import Source, decode_event

    fields = settings.event_fields()
    try:
        doc = json.loads(raw)
        doc.pop(fields.y, None)
        decode_event(json.dumps(doc, allow_nan=True).encode(), Source(settings.events_topic, 0, 0),
                     fields, "binary", settings.event_limits())
    except InvalidEvent as exc:
        return str(exc)
    return ""


def _report(path: Path, problems: list[str], what: str) -> None:
    for problem in problems[:SHOWN_LINES]:
        print(f"--file {path}: {problem}", file=sys.stderr)
    if len(problems) > SHOWN_LINES:
        print(f"--file {path}: ... {len(problems) - SHOWN_LINES} more {what}", file=sys.stderr)


def cmd_evaluate(settings: Settings, args: argparse.Namespace) -> int:
    from stream_learner.backtest import Item, backtest, check_candidates, jsonl_records, rank_metric

    candidates = settings.candidate_specs()
    rank_metric(check_candidates(candidates, settings), args.rank_by, settings.rolling_window)  # before I/O
    ranged = [f for f in ("from_offset", "to_offset", "from_time", "to_time") if getattr(args, f)]
    records: Iterator[Item]
    if args.file is not None:
        if ranged:
            raise ConfigError(f"--{ranged[0].replace('_', '-')}: a range of a topic, not of --file")
        if not args.file.is_file():
            raise ConfigError(f"--file {args.file}: no such file")
        records = jsonl_records(args.file)
    else:
        from consumers.replay_range import make_bounds, read_range

        bounds = make_bounds(args.from_offset, args.to_offset, args.from_time, args.to_time)
        records = read_range(_clients(settings), settings, bounds)
    board = backtest(records, settings, candidates, labels_delay=settings.labels_delay, rank_by=args.rank_by)
    if args.format == "json":
        print(json.dumps(board.as_dict(), indent=2))
    else:
        print(board.table())
    return 0


def cmd_models(settings: Settings, args: argparse.Namespace) -> int:
    from stream_learner.model_admin import run
    from stream_learner.state.keyed_redis import RedisKeyedStore

    return run(_store(settings), RedisKeyedStore.for_settings(settings), settings, args,
               model_given=_model_given(settings, args))


def _model_given(settings: Settings, args: argparse.Namespace) -> bool:
    return (args.model is not None or env_var("model") in os.environ
            or settings.model != Settings().model)


_COMMANDS = {"learn": cmd_learn, "serve": cmd_serve, "produce": cmd_produce, "models": cmd_models,
             "evaluate": cmd_evaluate}


if __name__ == "__main__":
    sys.exit(main())
