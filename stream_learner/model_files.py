"""``models export`` and ``models import``: one version as a signed file, and back.

The file is one JSON document holding the version's header, its payload (base64) and its
signature, as the store keeps them: whoever holds the HMAC key can check it. An import verifies
the signature and opens the payload with the allow-list unpickler before it writes anything,
then stores it as the model's next version, signed again for its new slot (model and version),
under the model's writer lease: it refuses while a learner holds it. The imported version
resumes at the offsets it was exported with.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from stream_learner.checkpoint import Record, open_record, seal_payload
from stream_learner.config import Settings
from stream_learner.errors import ConfigError, StreamLearnerError
from stream_learner.state.base import MAX_CHECKPOINT_BYTES, held

FORMAT = "stream-learner-export/1"
IMPORT_LEASE_S = 30.0


def export_version(store: Any, settings: Settings, *, version: int, path: Path) -> int:
    record = store.load(settings.model, version)
    doc = {"format": FORMAT, "model": settings.model, "version": version,
           "header": record.header.decode(), "signature": record.signature,
           "payload": base64.b64encode(record.payload).decode()}
    try:
        path.write_text(json.dumps(doc))
    except OSError as exc:
        raise ConfigError(f"--file {path}: cannot write it: {exc.strerror or exc}") from None
    print(f"model {settings.model}: v{version} exported to {path} ({len(record.payload)} payload bytes)")
    return 0


def read_export(path: Path) -> Record:
    """The record in an export file, unverified; ``ConfigError`` naming the file otherwise."""
    try:
        if path.stat().st_size > MAX_CHECKPOINT_BYTES * 4 // 3 + 1024 * 1024:
            raise ConfigError(f"--file {path}: larger than any checkpoint")
        doc = json.loads(path.read_bytes())
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ConfigError(f"--file {path}: not a file of stream-learner models export")
        payload = base64.b64decode(doc["payload"], validate=True)
        return Record(str(doc["header"]).encode(), payload, str(doc["signature"]), str(doc["model"]),
                      int(doc["version"]))
    except FileNotFoundError:
        raise ConfigError(f"--file {path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"--file {path}: cannot read it: {exc.strerror or exc}") from None
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise ConfigError(f"--file {path}: not a file of stream-learner models export: {exc}") from None


def import_file(store: Any, settings: Settings, path: Path) -> int:
    s = settings
    if not s.hmac_key:
        raise ConfigError("--hmac-key: required to verify the file and sign what is imported")
    record = read_export(path)
    try:  # verified, then opened with the allow-list: nothing is written before both pass
        ckpt = open_record(record, s.signing_keys(), s.allow_version_mismatch, s.trusted_packages())
    except StreamLearnerError as exc:
        raise StreamLearnerError(f"--file {path}: refused: {exc}") from None
    token = store.acquire(s.model, IMPORT_LEASE_S, owner="models-import")
    if token is None:
        raise held(s.model, "another process")
    try:
        version = store.latest_version(s.model) + 1
        meta = replace(ckpt.meta, model=s.model, version=version, token=token, key_id=s.hmac_key_id)
        keep = len(store.versions(s.model)) + 1  # the learner's --keep-versions trims, not an import
        store.save(s.model, version, seal_payload(meta, record.payload, s.hmac_key.encode()), token, keep)
    finally:
        store.release(s.model, token, owner="models-import")
    print(f"model {s.model}: {path} (model {record.model} v{record.version}) imported as v{version}")
    return 0
