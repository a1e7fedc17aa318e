"""The model store's interface: versioned, signed checkpoint records, one writer per model.

Two implementations: ``state.redis.RedisStore`` (the real one) and ``state.memory.MemoryStore``
(its in-memory twin for unit tests). Redis layout for model ``m`` under prefix ``p``
(the ``{p:m}`` hash tag keeps one model's keys in one cluster slot)::

    {p:m}:v:<n>      hash: header, signature, chunks, payload:0..chunks-1
    {p:m}:versions   sorted set of the versions kept (the last K)
    {p:m}:latest     the newest version number            what predictors poll
    {p:m}:fence      the fencing token of the newest writer (only ever grows)
    {p:m}:lease      the token of the writer holding the lease, with a TTL
    {p:m}:announce   pub/sub channel: the new version number on each save
    {p:m}:request    an operator's request to the learner (JSON; stream_learner.requests)
    {p:m}:serving    hash: the version frozen predictors serve, by whom (learner, operator,
                     rollback), when and why; absent: the latest
    {p:m}:tags       hash: tag -> version; tagged and served versions outlive --keep-versions

A learner becomes the writer by taking the lease when it is free, or held by its own
instance id (a restart of the same instance need not wait for the dead one's lease), which
also increments the fence; it renews the lease while it runs. A save is atomic and checked
by the store: it refuses a writer whose token is not the current fence (a zombie learner
that lost its lease) and a version that does not follow the latest.

The served version follows the learner's saves unless an operator holds it (``serve``): by
hand (``operator``, until they let it follow again) or by a rollback (``rollback``, until the
learner saves a version that descends from it: ``reclaim``).
"""


from __future__ import annotations

from typing import Any, NamedTuple, Protocol

from stream_learner.checkpoint import Record
from stream_learner.errors import CheckpointError, FencedError, OutOfOrder

# One Redis value may hold 512 MB; checkpoints are written in chunks well below that.
CHUNK_BYTES = 64 * 1024 * 1024
MAX_CHECKPOINT_BYTES = 1024 * 1024 * 1024


class Serving(NamedTuple):
    """The version frozen predictors serve, and who set it ("" when nobody has: the latest)."""

    version: int
    by: str
    at: float
    reason: str


class SaveRules(NamedTuple):
    """What a save does besides writing its version (``ModelStore.save``'s options)."""

    keep: int
    serve: bool = True
    reclaim: bool = False


class ModelStore(Protocol):
    # Whether another process (a forked checkpoint writer) sees the same store.
    shared: bool

    def clone(self) -> ModelStore:
        """The same store through connections of its own, made without network I/O. A call that
        times out drops its connection, and a new one must greet the server before its command:
        the checkpoints' connection is kept from the timeouts of the lease and steering."""

    def acquire(self, model: str, ttl: float, owner: str = "") -> int | None:
        """Take the writer lease if it is free or already ``owner``'s (a restart of the same
        instance): a new fencing token, else None."""

    def renew(self, model: str, token: int, ttl: float, owner: str = "") -> None:
        """Extend the lease; ``FencedError`` if another writer took over."""

    def release(self, model: str, token: int, owner: str = "") -> None:
        """Give the lease up (a standby may take over at once)."""

    def save(self, model: str, version: int, record: Record, token: int, keep: int, *,
             serve: bool = True, reclaim: bool = False) -> None:
        """Write ``version`` atomically, keep the newest ``keep`` versions (and the served and
        tagged ones), announce it; ``serve``: serve it unless an operator holds the served
        version; ``reclaim``: serve it even if a rollback holds it."""

    def latest_version(self, model: str) -> int:
        """The newest version, 0 when there is none."""

    def load(self, model: str, version: int = 0) -> Record:
        """One version's record (0: the latest), with the slot it was read from;
        ``NoCheckpoint`` when it is not there."""

    def versions(self, model: str) -> list[int]:
        """The versions kept, oldest first."""

    def models(self) -> list[str]:
        """The models that have a checkpoint, by name."""

    def reset(self, model: str) -> int:
        """Delete every version of ``model`` and its request (its fence stays: tokens only ever
        grow); the number deleted. ``CheckpointError`` while a learner holds its lease."""

    def served(self, model: str) -> Serving:
        """The version frozen predictors serve (the latest when nobody set one; 0: none)."""

    def serve(self, model: str, version: int, *, by: str, reason: str = "") -> None:
        """Serve ``version`` (0: the latest) from now on; ``by`` an operator holds it there, by
        ``learner`` it follows the learner's saves again. ``NoCheckpoint`` if it is not kept."""

    def tag(self, model: str, name: str, version: int) -> None:
        """Tag ``version`` (kept whatever ``--keep-versions``); ``NoCheckpoint`` if it is not kept."""

    def untag(self, model: str, name: str) -> bool:
        """Remove a tag; whether it existed."""

    def tags(self, model: str) -> dict[str, int]:
        """Tag -> version."""

    def request(self, model: str, doc: bytes) -> None:
        """Leave an operator's request for the model's learner (it replaces an earlier one)."""

    def requested(self, model: str) -> bytes | None:
        """The operator's request, None when there is none; the learner applies each one once."""


def fenced(model: str, token: int, current: int) -> FencedError:
    return FencedError(
        f"model {model}: fencing token {token} is stale (current {current}): another learner took over")


def out_of_order(model: str, version: int, latest: int) -> OutOfOrder:
    return OutOfOrder(f"model {model}: version {version} does not follow the latest {latest}")


def held(model: str, holder: str) -> CheckpointError:
    return CheckpointError(f"model {model}: learner {holder!r} holds the writer lease; stop it first")


def damaged(key: str) -> CheckpointError:
    return CheckpointError(f"Redis key {key} holds no number: someone wrote it by hand; repair or "
                           "delete it (refusing to write meanwhile)")


def number(value: Any, key: str) -> int:
    """A number the store wrote (0 when the key is absent); ``CheckpointError`` if it is not."""
    try:
        return int(value or 0)
    except ValueError:
        raise CheckpointError(f"Redis key {key} holds {value[:40]!r}, not a number: someone wrote "
                              "it by hand; repair or delete it") from None


def missing(model: str, version: int) -> str:
    return f"model {model}: no checkpoint" + (f" version {version}" if version else "") + " in the store"
