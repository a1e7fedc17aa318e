"""The model store: versioned, signed checkpoint records, with a fencing token per model.

Two implementations of one interface: ``RedisStore`` (the real one) and ``MemoryStore``
(its in-memory twin for unit tests). Redis layout for model ``m`` under prefix ``p``
(the ``{p:m}`` hash tag keeps one model's keys in one cluster slot)::

    {p:m}:v:<n>      hash: header, payload, signature     one checkpoint version
    {p:m}:versions   sorted set of the versions kept (the last K)
    {p:m}:latest     the newest version number            what predictors poll
    {p:m}:fence      the fencing token of the current writer
    {p:m}:announce   pub/sub channel: the new version number on each save

A save is one Lua script, so it is atomic and checked inside Redis: it refuses a writer
whose token is not the current fence (a zombie learner) and a version that does not
follow the latest.

>>> store = MemoryStore()
>>> token = store.acquire("m")
>>> store.save("m", 1, Record(b"{}", b"", "sig"), token, keep=2)
>>> store.latest_version("m"), store.acquire("m") > token
(1, True)
>>> store.save("m", 2, Record(b"{}", b"", "sig"), token, keep=2)
Traceback (most recent call last):
...
stream_learner.errors.FencedError: model m: fencing token 1 is stale (current 2): another learner took over
"""

from __future__ import annotations

from typing import Any, Protocol

import redis

from stream_learner.checkpoint import Record
from stream_learner.errors import CheckpointError, FencedError, NoCheckpoint, StoreUnavailable


class ModelStore(Protocol):
    def acquire(self, model: str) -> int:
        """Become the model's only writer; returns the fencing token for ``save``."""

    def save(self, model: str, version: int, record: Record, token: int, keep: int) -> None:
        """Write ``version`` atomically, keep the newest ``keep`` versions, announce it."""

    def latest_version(self, model: str) -> int:
        """The newest version, 0 when there is none."""

    def load(self, model: str, version: int = 0) -> Record:
        """One version's record (0: the latest); ``NoCheckpoint`` when it is not there."""

    def versions(self, model: str) -> list[int]:
        """The versions kept, oldest first."""


def _fenced(model: str, token: int, current: int) -> FencedError:
    return FencedError(
        f"model {model}: fencing token {token} is stale (current {current}): another learner took over")


def _out_of_order(model: str, version: int, latest: int) -> CheckpointError:
    return CheckpointError(f"model {model}: version {version} does not follow the latest {latest}")


class MemoryStore:
    """The in-memory twin of ``RedisStore``: same rules, no server."""

    def __init__(self) -> None:
        self.records: dict[str, dict[int, Record]] = {}
        self.fences: dict[str, int] = {}

    def acquire(self, model: str) -> int:
        self.fences[model] = self.fences.get(model, 0) + 1
        return self.fences[model]

    def save(self, model: str, version: int, record: Record, token: int, keep: int) -> None:
        current = self.fences.get(model, 0)
        if token != current:
            raise _fenced(model, token, current)
        latest = self.latest_version(model)
        if version != latest + 1:
            raise _out_of_order(model, version, latest)
        kept = self.records.setdefault(model, {})
        kept[version] = record
        for old in sorted(kept)[:-keep]:
            del kept[old]

    def latest_version(self, model: str) -> int:
        return max(self.records.get(model, {}), default=0)

    def load(self, model: str, version: int = 0) -> Record:
        version = version or self.latest_version(model)
        try:
            return self.records[model][version]
        except KeyError:
            raise NoCheckpoint(_missing(model, version)) from None

    def versions(self, model: str) -> list[int]:
        return sorted(self.records.get(model, {}))


def _missing(model: str, version: int) -> str:
    return f"model {model}: no checkpoint" + (f" version {version}" if version else "") + " in the store"


_SAVE = """
local fence = tonumber(redis.call('GET', KEYS[1]) or '0')
if fence ~= tonumber(ARGV[1]) then return {'fenced', fence} end
local latest = tonumber(redis.call('GET', KEYS[2]) or '0')
local version = tonumber(ARGV[2])
if version ~= latest + 1 then return {'order', latest} end
redis.call('HSET', KEYS[4], 'header', ARGV[3], 'payload', ARGV[4], 'signature', ARGV[5])
redis.call('SET', KEYS[2], version)
redis.call('ZADD', KEYS[3], version, version)
local keep = tonumber(ARGV[6])
local old = redis.call('ZRANGE', KEYS[3], 0, -keep - 1)
for _, v in ipairs(old) do
  redis.call('DEL', ARGV[7] .. v)
  redis.call('ZREM', KEYS[3], v)
end
redis.call('PUBLISH', ARGV[8], version)
return {'ok', version}
"""


class RedisStore:
    """Checkpoints in Redis. Connects lazily: the constructor does no network I/O."""

    def __init__(self, url: str, prefix: str = "stream-learner", **client_options: Any) -> None:
        self._url = url
        self._prefix = prefix
        self._options = {"socket_timeout": 10.0, "socket_connect_timeout": 5.0, **client_options}
        self._client: redis.Redis | None = None
        self._save_script: Any = None

    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            try:
                self._client = redis.Redis.from_url(self._url, **self._options)
            except ValueError as exc:
                raise StoreUnavailable(f"--redis-url: {exc}") from None
            self._save_script = self._client.register_script(_SAVE)
        return self._client

    def key(self, model: str, suffix: str) -> str:
        return f"{{{self._prefix}:{model}}}:{suffix}"

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except redis.ConnectionError as exc:
            raise StoreUnavailable(f"Redis unreachable while {what}: {exc}") from None
        except redis.TimeoutError as exc:
            raise StoreUnavailable(f"Redis timed out while {what}: {exc}") from None
        except redis.RedisError as exc:
            raise CheckpointError(f"Redis refused {what}: {type(exc).__name__}: {exc}") from None

    def acquire(self, model: str) -> int:
        return int(self._call("taking the fencing token", self.client.incr, self.key(model, "fence")))

    def save(self, model: str, version: int, record: Record, token: int, keep: int) -> None:
        keys = [self.key(model, s) for s in ("fence", "latest", "versions", f"v:{version}")]
        args = [token, version, record.header, record.payload, record.signature, keep,
                self.key(model, "v:"), self.key(model, "announce")]
        _ = self.client
        status, value = self._call(f"saving checkpoint {model} v{version}",
                                   self._save_script, keys, args)
        if status == b"fenced":
            raise _fenced(model, token, int(value))
        if status == b"order":
            raise _out_of_order(model, version, int(value))

    def latest_version(self, model: str) -> int:
        value = self._call("reading the latest version", self.client.get, self.key(model, "latest"))
        return int(value or 0)

    def load(self, model: str, version: int = 0) -> Record:
        version = version or self.latest_version(model)
        fields = self._call(f"loading checkpoint {model} v{version}", self.client.hmget,
                            self.key(model, f"v:{version}"), ["header", "payload", "signature"])
        if not version or fields[0] is None or fields[1] is None:
            raise NoCheckpoint(_missing(model, version))
        return Record(fields[0], fields[1], (fields[2] or b"").decode())

    def versions(self, model: str) -> list[int]:
        found = self._call("listing versions", self.client.zrange, self.key(model, "versions"), 0, -1)
        return sorted(int(v) for v in found)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
