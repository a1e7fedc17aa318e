"""``stream-learner models``: what an operator reads of and does to a model in the store.

``list``, ``show`` and ``history`` read checkpoint headers (signed, readable without
unpickling); ``reset`` deletes a model's versions; ``promote`` leaves a request that the model's
learner applies at its next checkpoint (stream_learner.requests). A key-scope model has
``list`` and ``reset`` (stream_learner.key_admin).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import time
from pathlib import Path
from typing import Any

from stream_learner import key_admin
from stream_learner.checkpoint import CheckpointMeta, read_meta, verify_record
from stream_learner.config import Settings
from stream_learner.errors import ConfigError, StreamLearnerError
from stream_learner.model_files import export_version, import_file
from stream_learner.requests import Request
from stream_learner.state.keyed_base import KeyedStore

ACTIONS = ("list", "show", "history", "promote", "serve", "rollback", "tag", "untag", "export", "import",
           "reset")


def _file(args: argparse.Namespace) -> Path:
    if not args.file:
        raise ConfigError(f"models {args.action}: give the file: --file FILE")
    return Path(args.file)


def _kept(version: int, versions: list[int], model: str, flag: str) -> int:
    if version not in versions:
        raise ConfigError(f"{flag} {version}: model {model} has no such version; the store keeps "
                          + ", ".join(f"v{v}" for v in versions))
    return version


def _serve(store: Any, model: str, args: argparse.Namespace, versions: list[int]) -> int:
    """Hold predictors on one version, or (--follow) let them follow the learner again."""
    if args.follow == bool(args.serve_version):
        raise ConfigError("models serve: give one of --version V (hold predictors on it) and --follow")
    if args.follow:
        store.serve(model, 0, by="learner", reason=args.reason or "")
        print(f"model {model}: predictors follow the learner again (v{store.served(model).version} now)")
        return 0
    version = _kept(args.serve_version, versions, model, "--version")
    store.serve(model, version, by="operator", reason=args.reason or "")
    print(f"model {model}: predictors serve v{version} until models serve --follow")
    return 0


def _rollback(store: Any, model: str, args: argparse.Namespace, versions: list[int]) -> int:
    """Predictors serve the version at once; the learner goes on from it at its next checkpoint."""
    if not args.to:
        raise ConfigError("models rollback: give the version to go back to: --to V")
    version = _kept(args.to, versions, model, "--to")
    read_meta(store.load(model, version))  # a readable header, before anything changes
    request = Request.new("rollback", version=version, reason=args.reason or "")
    store.serve(model, version, by="rollback", reason=args.reason or "")
    store.request(model, request.encode())
    print(f"model {model}: predictors serve v{version} now; the learner goes on from it at its next "
          f"checkpoint, at its current offsets (request {request.id}): see models history")
    return 0


def _tag(store: Any, model: str, args: argparse.Namespace, versions: list[int]) -> int:
    if not args.tag:
        raise ConfigError(f"models {args.action}: give the tag: --tag NAME")
    if args.action == "untag":
        if not store.untag(model, args.tag):
            raise StreamLearnerError(f"model {model} has no tag {args.tag!r}")
        print(f"model {model}: tag {args.tag} removed")
        return 0
    version = _kept(args.version or versions[-1], versions, model, "VERSION")
    store.tag(model, args.tag, version)
    print(f"model {model}: v{version} tagged {args.tag}; kept whatever --keep-versions")
    return 0


POINTERS = {"serve": _serve, "rollback": _rollback, "tag": _tag, "untag": _tag}


def run(store: Any, keyed: KeyedStore, settings: Settings, args: argparse.Namespace, *,
        model_given: bool) -> int:
    """The ``models`` command's ``args.action`` on the global store, or on the keyed store for
    a key-scope model; ``model_given``: whether --model was given."""
    if args.action == "reset":
        return _reset(store, keyed, settings.model, args.yes)
    if args.action == "import":
        return import_file(store, settings, _file(args))
    if args.action == "list" and not model_given:
        return _list_models(store, keyed)
    versions = store.versions(settings.model)
    if not versions:
        return _not_global(keyed, settings.model, args.action)
    if args.action == "promote":
        return _promote(store, settings.model, args)
    if args.action == "history":
        return _history(read_meta(store.load(settings.model)))
    if args.action in POINTERS:
        return POINTERS[args.action](store, settings.model, args, versions)
    if args.action == "export":
        return export_version(store, settings, version=args.version or versions[-1], path=_file(args))
    if args.action == "show" and args.version and args.version not in versions:
        raise StreamLearnerError(f"model {settings.model} has no version {args.version}; the store keeps "
                                 + ", ".join(f"v{v}" for v in versions))
    shown = versions if args.action == "list" else [args.version or versions[-1]]
    marks = _marks(store, settings.model)
    for version in shown:
        try:
            _show_version(settings, args.action, store.load(settings.model, version), marks.get(version, ""))
        except (StreamLearnerError, AttributeError, TypeError, ValueError) as exc:
            if args.action != "list":
                raise StreamLearnerError(f"v{version}: {exc}") from None
            print(f"v{version}  unreadable: {exc}")  # the others are still worth listing
    if args.action == "list" and keyed.partitions(settings.model):
        return key_admin.list_partitions(keyed, settings.model)
    return 0


def _promote(store: Any, model: str, args: argparse.Namespace) -> int:
    """Leave the request, once the latest checkpoint shows the challenger learning."""
    name = args.challenger
    if not name:
        raise ConfigError("models promote: give the challenger to promote: --challenger NAME")
    meta = read_meta(store.load(model))
    challenger = meta.challengers.get(name)
    if challenger is None:
        known = ", ".join(sorted(meta.challengers)) or "none"
        raise StreamLearnerError(f"model {model} v{meta.version} has no challenger {name!r} "
                                 f"(its challengers: {known})")
    if challenger.get("error"):
        raise StreamLearnerError(f"challenger {name} stopped learning: {challenger['error']}")
    request = Request.new("promote", challenger=name, reason=args.reason or "")
    store.request(model, request.encode())
    print(f"model {model}: promotion of challenger {name} requested (request {request.id}); the "
          "learner applies it at its next checkpoint: see models history")
    return 0


def _history(meta: CheckpointMeta) -> int:
    """A line per entry of the model's history, oldest first."""
    if not meta.history:
        print(f"model {meta.model}: no promotions or operators' actions yet (v{meta.version})")
        return 0
    for entry in meta.history:
        at = datetime.datetime.fromtimestamp(float(entry.get("at", 0)), datetime.UTC)
        line = f"v{entry.get('version')}  {at:%Y-%m-%d %H:%M:%S}Z  {entry.get('action')}"
        if entry.get("action") == "promote":
            metrics = entry.get("metrics", {})
            line += (f"  {entry.get('challenger')} ({entry.get('spec')})"
                     f" replaces {entry.get('former_spec')}  by {entry.get('by')}: {entry.get('reason')}"
                     f"  champion {json.dumps(metrics.get('champion'))}"
                     f"  challenger {json.dumps(metrics.get('challenger'))}")
        else:
            line += f"  by {entry.get('by')}: {entry.get('reason')}"
        print(line)
    return 0


def _not_global(keyed: KeyedStore, model: str, action: str) -> int:
    if not keyed.partitions(model):
        print(f"model {model}: no checkpoints in the store")
        return 1
    if action == "list":
        return key_admin.list_partitions(keyed, model)
    raise StreamLearnerError(f"models {action}: model {model} is a key-scope model (one model per key); "
                             "models list and models reset are its commands")


def _list_models(store: Any, keyed: KeyedStore) -> int:
    """A line per model in the store: its latest version, the version's age and learned count;
    then a line per key-scope model."""
    names, key_lines = store.models(), key_admin.model_lines(keyed)
    if not names and not key_lines:
        print("no models in the store")
        return 1
    now = time.time()
    for name in names:
        try:
            meta = read_meta(store.load(name))
            print(f"{name}  v{meta.version}  age {now - meta.created_at:.1f}s  learned {meta.learned}")
        except StreamLearnerError as exc:
            print(f"{name}  unreadable: {exc}")
    for line in key_lines:
        print(line)
    return 0


def _reset(store: Any, keyed: KeyedStore, model: str, confirmed: bool) -> int:
    if not confirmed:
        raise ConfigError(f"models reset deletes every version of model {model}: add --yes to confirm")
    key_scope = bool(keyed.partitions(model))
    if not key_scope or store.versions(model):
        deleted = store.reset(model)
        print(f"model {model}: deleted {deleted} versions; the next learner starts it afresh")
    if key_scope:
        print(key_admin.reset(keyed, model))
    return 0


def _marks(store: Any, model: str) -> dict[int, str]:
    """What ``models list`` says of a version besides its header: served, tagged."""
    served = store.served(model)
    out: dict[int, str] = {served.version: f"served ({served.by or 'latest'})"}
    for name, version in sorted(store.tags(model).items()):
        out[version] = f"{out[version]}, tag {name}" if version in out else f"tag {name}"
    return out


def _show_version(settings: Settings, action: str, record: Any, marks: str = "") -> None:
    now = time.time()
    meta = read_meta(record)
    if settings.hmac_key:
        try:
            verify_record(record, settings.signing_keys(), settings.allow_version_mismatch)
            signature = "verified"
        except StreamLearnerError as exc:
            signature = f"REFUSED ({exc})"
    else:
        signature = "not checked (no --hmac-key)"
    if action == "list":
        offsets = ",".join(f"{tp}={o}" for tp, o in sorted(meta.offsets.items()))
        print(f"v{meta.version}  age {now - meta.created_at:.1f}s  learned {meta.learned}  "
              f"events {meta.events}  dead letters {sum(meta.dead_letters.values())}  "
              f"offsets {offsets}  metrics {json.dumps(meta.metrics)}  signature {signature}"
              + (f"  [{marks}]" if marks else ""))
    else:
        doc = dataclasses.asdict(meta)
        doc.update(age_seconds=round(now - meta.created_at, 1), payload_bytes=len(record.payload),
                   signature=signature, marks=marks)
        print(json.dumps(doc, indent=2, sort_keys=True))
