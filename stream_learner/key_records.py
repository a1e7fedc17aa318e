"""Signed records of key scope: a partition's checkpoint and each key's model.

A partition's checkpoint is a checkpoint record (``stream_learner.checkpoint``) whose slot is
``MODEL#PARTITION``: its header holds the partition's next offset, version, token and figures,
its payload the pickled ``PartitionState``. A key's model is a smaller record: ``b"SLK1"``, the
key id, the HMAC-SHA256 of (slot, runtime, payload), the runtime (River's and Python's minor
versions) and the pickled ``KeyModel``, where the slot is ``["MODEL", PARTITION, "KEY"]``: a record
moved to another key, partition or model does not verify. Both are verified before a byte is
unpickled, and unpickled with the allow-list.

>>> from stream_learner.keyed import KeyedEngine
>>> engine = KeyedEngine("linear_model.LogisticRegression()")
>>> blob = seal_key(engine.fresh_model(), slot=key_slot("m", 3, "alice"), key_id="k1", secret=b"s")
>>> open_key(blob, slot=key_slot("m", 3, "alice"), keys={"k1": b"s"}).learned
0
>>> open_key(blob, slot=key_slot("m", 3, "bob"), keys={"k1": b"s"})
Traceback (most recent call last):
...
stream_learner.errors.IntegrityError: key model ["m", 3, "bob"]: signature does not match ...
"""

from __future__ import annotations

import hashlib
import hmac
import json
import pickle
from collections.abc import Mapping
from typing import Any

from stream_learner import unpickler
from stream_learner.checkpoint import CheckpointMeta, Record, seal_payload, spec_package, verify_record
from stream_learner.errors import CheckpointError, IntegrityError
from stream_learner.keyed import KeyModel, PartitionState
from stream_learner.models import runtime_versions

MAGIC = b"SLK1"
_MAC_BYTES = 32


def partition_slot(model: str, partition: int) -> str:
    return f"{model}#{partition}"


def key_slot(model: str, partition: int, key: str) -> str:
    """The slot a key's record is signed for, as JSON: a model name and a key may hold any
    character, so no separator could keep two slots apart."""
    return json.dumps([model, partition, key])


def _runtime() -> bytes:
    here = runtime_versions()
    return " ".join(f"{lib} {'.'.join(here[lib].split('.')[:2])}" for lib in ("river", "python")).encode()


def _mac(secret: bytes, slot: str, runtime: bytes, payload: bytes) -> bytes:
    encoded = slot.encode()
    mac = hmac.new(secret, len(encoded).to_bytes(8, "big") + encoded, hashlib.sha256)
    mac.update(len(runtime).to_bytes(2, "big") + runtime)
    mac.update(payload)
    return mac.digest()


def seal_key(key_model: KeyModel, *, slot: str, key_id: str, secret: bytes) -> bytes:
    """The record of one key's model, signed for ``slot``."""
    payload = pickle.dumps(key_model, protocol=pickle.HIGHEST_PROTOCOL)
    runtime, kid = _runtime(), key_id.encode()
    return b"".join((MAGIC, bytes([len(kid)]), kid, _mac(secret, slot, runtime, payload),
                     bytes([len(runtime)]), runtime, payload))


def open_key(blob: bytes, *, slot: str, keys: Mapping[str, bytes], allow_version_mismatch: bool = False,
             package: str = "", trusted: bool = False) -> KeyModel:
    """Verify a key's record for ``slot``, then unpickle it with the allow-list."""
    where = f"key model {slot}"
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + 2 + _MAC_BYTES:
        raise IntegrityError(f"{where}: not a key model record: refusing to unpickle it")
    at = len(MAGIC)
    kid = blob[at + 1:at + 1 + blob[at]].decode(errors="replace")
    at += 1 + blob[at]
    mac, at = blob[at:at + _MAC_BYTES], at + _MAC_BYTES
    runtime, at = blob[at + 1:at + 1 + blob[at]], at + 1 + blob[at]
    payload = blob[at:]
    secret = keys.get(kid)
    if secret is None:
        raise IntegrityError(f"{where}: signed with unknown key id {kid!r}")
    if not hmac.compare_digest(_mac(secret, slot, runtime, payload), mac):
        raise IntegrityError(f"{where}: signature does not match (key id {kid!r}): refusing to unpickle it")
    if runtime != _runtime() and not allow_version_mismatch:
        raise IntegrityError(f"{where}: written by {runtime.decode(errors='replace')}, this process runs "
                             f"{_runtime().decode()}; pickles are not portable across minor versions")
    found = _load(payload, where, package, trusted)
    if not isinstance(found, KeyModel):
        raise IntegrityError(f"{where}: payload is not a key model")
    return found


def seal_partition(part: PartitionState, meta: CheckpointMeta, *, key_id: str, secret: bytes) -> Record:
    """A partition's checkpoint record; ``meta.model`` is its slot (``partition_slot``)."""
    payload = pickle.dumps(part, protocol=pickle.HIGHEST_PROTOCOL)
    header = CheckpointMeta(meta.model, meta.version, meta.offsets, learned=meta.learned,
                            learned_digest=meta.learned_digest, events=meta.events,
                            dead_letters=meta.dead_letters, metrics=part.metrics.report(), spec=part.spec,
                            task=part.task, token=meta.token, created_at=meta.created_at, key_id=key_id,
                            runtime=runtime_versions(), keys=meta.keys)
    return seal_payload(header, payload, secret)


def open_partition(record: Record, keys: Mapping[str, bytes], *, allow_version_mismatch: bool = False,
                   trusted: frozenset[str] = frozenset()) -> tuple[CheckpointMeta, PartitionState]:
    """Verify a partition's checkpoint, then unpickle its state with the allow-list."""
    meta = verify_record(record, keys, allow_version_mismatch)
    package = spec_package(meta.spec)
    found = _load(record.payload, f"checkpoint {meta.model} v{meta.version}", package, package in trusted)
    if not isinstance(found, PartitionState):
        raise IntegrityError(f"checkpoint {meta.model} v{meta.version}: payload is not a partition's state")
    return meta, found


def _load(payload: bytes, where: str, package: str, trusted: bool) -> Any:
    try:
        return unpickler.load(payload, package, trusted)
    except CheckpointError as exc:
        raise type(exc)(f"{where}: {exc}") from None
    except Exception as exc:
        raise IntegrityError(f"{where}: payload does not unpickle: {type(exc).__name__}: {exc}") from None
