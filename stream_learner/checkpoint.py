"""Signed checkpoint records: a JSON header, a pickled payload, and an HMAC over both.

The header (offsets, version, counts, metrics, versions of River and Python) is plain JSON,
readable without unpickling anything. The payload is a pickle of the ``ModelState``, and
unpickling runs code: ``open_record`` verifies the HMAC-SHA256 signature and the runtime
versions first, and refuses with ``IntegrityError`` before a single byte is unpickled.

>>> from stream_learner.engine import ModelState
>>> keys = {"k1": b"secret"}
>>> state = ModelState.fresh("linear_model.LinearRegression()")
>>> record = seal_record(state, CheckpointMeta("demo", 1, {"events:0": 10}), "k1", keys["k1"])
>>> open_record(record, keys).meta.offsets
{'events:0': 10}
>>> open_record(record._replace(signature="00" * 32), keys)
Traceback (most recent call last):
...
stream_learner.errors.IntegrityError: checkpoint demo v1: signature does not match ...
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import pickle
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, NamedTuple

from stream_learner import unpickler
from stream_learner.engine import ModelState
from stream_learner.errors import CheckpointError, IntegrityError
from stream_learner.events import Partition
from stream_learner.models import runtime_versions

FORMAT = 2


class Record(NamedTuple):
    """What the store keeps for one version, byte for byte, and the slot it was read from (or
    sealed for): a record is only valid in the slot its signed header names."""

    header: bytes
    payload: bytes
    signature: str
    model: str = ""
    version: int = 0


@dataclass
class CheckpointMeta:
    """The header: everything about a checkpoint that can be read without unpickling."""

    model: str
    version: int
    offsets: dict[str, int]  # "topic:partition" -> next offset to read
    learned: int = 0
    learned_digest: int = 0  # see engine.id_hash
    events: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)  # reason -> count
    metrics: dict[str, float | None] = field(default_factory=dict)
    published: dict[str, int] = field(default_factory=dict)  # predictions "topic:partition" -> next offset
    checkpoint_failures: int = 0
    labels: dict[str, int] = field(default_factory=dict)  # late-label outcomes, and events waiting
    features: dict[str, int] = field(default_factory=dict)  # the feature budget: known, refused
    # name -> {spec, learned, learned_digest, metrics, error}: each challenger's figures
    challengers: dict[str, dict[str, Any]] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)  # promotions, operators' actions
    keys: dict[str, int] = field(default_factory=dict)  # key scope: the partition's key figures
    spec: str = ""
    task: str = ""
    token: int = 0
    created_at: float = 0.0
    key_id: str = ""
    runtime: dict[str, str] = field(default_factory=dict)
    format: int = FORMAT


@dataclass
class Checkpoint:
    meta: CheckpointMeta
    state: ModelState


def partition_key(partition: Partition) -> str:
    """How the header spells a partition: ``topic:partition``."""
    return f"{partition[0]}:{partition[1]}"


def header_offsets(offsets: Mapping[Partition, int]) -> dict[str, int]:
    """Offsets by partition, as the header keeps them.

    >>> header_offsets({("events", 0): 5}), read_offsets({"events:0": 5, "a:b:1": 2})
    ({'events:0': 5}, {('events', 0): 5, ('a:b', 1): 2})
    """
    return {partition_key(p): o for p, o in offsets.items()}


def read_offsets(header: Mapping[str, int]) -> dict[Partition, int]:
    """Offsets by partition, from the header's spelling."""
    out: dict[Partition, int] = {}
    for key, offset in header.items():
        topic, _, partition = key.rpartition(":")
        out[topic, int(partition)] = offset
    return out


def _mac(key: bytes, header: bytes, payload: bytes) -> str:
    mac = hmac.new(key, len(header).to_bytes(8, "big"), hashlib.sha256)
    mac.update(header)
    mac.update(payload)
    return mac.hexdigest()


def seal_record(state: ModelState, meta: CheckpointMeta, key_id: str, key: bytes) -> Record:
    """Pickle the state and sign it with the header, ``described`` to match it."""
    return sealed(state, meta, key_id, key)[0]


def sealed(state: ModelState, meta: CheckpointMeta, key_id: str, key: bytes) -> tuple[Record, CheckpointMeta]:
    """``seal_record``, and the described header it signed."""
    payload = pickle_state(state, meta)
    assert payload is not None
    header = described(meta, state, key_id)
    return seal_payload(header, payload, key), header


def pickle_state(state: ModelState, meta: CheckpointMeta, limit: int | None = None) -> bytes | None:
    """The payload of a checkpoint of ``state`` as it is now (``meta`` names it in errors), or
    None as soon as the pickle grows beyond ``limit`` bytes: what it costs to find out that a
    state is large is bounded by pickling ``limit`` bytes. ``CheckpointError`` if the model does
    not pickle.

    >>> from stream_learner.engine import ModelState
    >>> meta = CheckpointMeta("m", 1, {})
    >>> state = ModelState.fresh("linear_model.LinearRegression()")
    >>> pickle_state(state, meta, limit=10) is None, len(pickle_state(state, meta)) > 10
    (True, True)
    """
    out = _Capped(limit)
    try:
        pickle.Pickler(out, protocol=pickle.HIGHEST_PROTOCOL).dump(state)
    except _OverLimit:
        return None
    except Exception as exc:  # anything a model's __reduce__ may raise
        raise CheckpointError(f"checkpoint {meta.model} v{meta.version}: the model does not pickle: "
                              f"{type(exc).__name__}: {exc}") from None
    return out.getvalue()


class _OverLimit(Exception):
    pass


class _Capped(io.BytesIO):
    """A pickle's destination that refuses to grow beyond ``limit`` bytes (None: no limit).
    The pickler writes a frame (up to 64 KiB) at a time, so it stops within a frame of it."""

    def __init__(self, limit: int | None) -> None:
        super().__init__()
        self.limit = limit

    def write(self, data: Any) -> int:
        # Large buffers come whole, as bytes, a memoryview or a PickleBuffer (a NumPy array's).
        if self.limit is not None and self.tell() + memoryview(data).nbytes > self.limit:
            raise _OverLimit
        return super().write(data)


def described(meta: CheckpointMeta, state: ModelState, key_id: str) -> CheckpointMeta:
    """``meta`` with what it says about the state filled in: counts, digest, metrics, versions.

    >>> from stream_learner.engine import ModelState
    >>> state = ModelState.fresh("linear_model.LinearRegression()")
    >>> meta = CheckpointMeta("m", 1, {})
    >>> "MAE" in described(meta, state, "k1").metrics, meta.metrics
    (True, {})
    """
    pending = state.pending
    return replace(
        meta, learned=state.learned, learned_digest=state.digest, metrics=state.metrics.report(),
        labels={} if pending is None else {**pending.counts, "waiting": len(pending.entries)},
        features={"known": state.features.known_features, "refused": state.features.refused},
        challengers={name: {"spec": c.spec, "learned": c.learned, "learned_digest": c.digest,
                            "metrics": c.metrics.report(), "error": c.error}
                     for name, c in state.challengers.items()},
        history=list(state.history), spec=state.spec, task=state.task,
        created_at=meta.created_at or time.time(), key_id=key_id, runtime=runtime_versions())


def seal_payload(meta: CheckpointMeta, payload: bytes, key: bytes) -> Record:
    header = json.dumps(asdict(meta), sort_keys=True, separators=(",", ":")).encode()
    return Record(header, payload, _mac(key, header, payload), meta.model, meta.version)


def read_meta(record: Record) -> CheckpointMeta:
    """The header alone (for listings); it is not trusted for anything else."""
    try:
        doc = json.loads(record.header)
        return CheckpointMeta(**doc)
    except (ValueError, TypeError) as exc:
        raise IntegrityError(f"checkpoint header is unreadable: {exc}") from None


def verify_record(record: Record, keys: Mapping[str, bytes], allow_version_mismatch: bool = False
                  ) -> CheckpointMeta:
    """Check signature and runtime versions; raise ``IntegrityError`` on any doubt."""
    meta = read_meta(record)
    where = f"checkpoint {record.model or meta.model} v{record.version or meta.version}"
    if not record.signature:
        raise IntegrityError(f"{where}: unsigned: refusing to unpickle it")
    key = keys.get(meta.key_id)
    if key is None:
        raise IntegrityError(f"{where}: signed with unknown key id {meta.key_id!r}")
    if not hmac.compare_digest(_mac(key, record.header, record.payload), record.signature):
        raise IntegrityError(
            f"{where}: signature does not match (key id {meta.key_id!r}): refusing to unpickle it")
    if (meta.model, meta.version) != (record.model, record.version):
        raise IntegrityError(f"the record in the slot of model {record.model} v{record.version} is "
                             f"signed as {meta.model} v{meta.version}: refusing a record moved there")
    here = runtime_versions()
    if meta.format != FORMAT:
        raise IntegrityError(f"{where}: format {meta.format}, this build reads format {FORMAT}")
    for lib in ("river", "python"):
        theirs, ours = meta.runtime.get(lib, "?"), here[lib]
        if _minor(theirs) != _minor(ours) and not allow_version_mismatch:
            raise IntegrityError(
                f"{where}: written by {lib} {theirs}, this process runs {lib} {ours}; "
                "pickles are not portable across minor versions")
    return meta


def open_record(record: Record, keys: Mapping[str, bytes], allow_version_mismatch: bool = False,
                packages: frozenset[str] = frozenset()) -> Checkpoint:
    """Verify, then unpickle with only the classes a River model needs (``stream_learner.
    unpickler``), and those of the ``packages`` of a ``package.module:factory`` spec that this
    process's configuration trusts."""
    meta = verify_record(record, keys, allow_version_mismatch)
    package = spec_package(meta.spec)
    try:
        state: Any = unpickler.load(record.payload, package, package in packages)
    except CheckpointError as exc:  # refused (IntegrityError), or a module that is not there
        raise type(exc)(f"checkpoint {meta.model} v{meta.version}: {exc}") from None
    except Exception as exc:
        raise IntegrityError(f"checkpoint {meta.model} v{meta.version}: payload does not unpickle: "
                             f"{type(exc).__name__}: {exc}") from None
    if not isinstance(state, ModelState):
        raise IntegrityError(f"checkpoint {meta.model} v{meta.version}: payload is not a model state")
    return Checkpoint(meta, state)


def spec_package(spec: str) -> str:
    """The package of a ``package.module:factory`` spec ("" for a River expression)."""
    return spec.split(":")[0].split(".")[0] if ":" in spec else ""


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])
