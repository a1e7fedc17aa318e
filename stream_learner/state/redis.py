"""Checkpoints in Redis: each operation that must be atomic is one Lua script, run inside Redis.

Keys and their layout: ``stream_learner.state.base``.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from stream_learner.checkpoint import Record
from stream_learner.errors import CheckpointError, NoCheckpoint
from stream_learner.state.base import (
    CHUNK_BYTES,
    MAX_CHECKPOINT_BYTES,
    Serving,
    damaged,
    fenced,
    held,
    missing,
    number,
    out_of_order,
)
from stream_learner.state.redis_client import RedisClient, glob_escape

# KEYS: fence, lease. ARGV: ttl ms, owner. The new token, or false when another owner holds it.
_ACQUIRE = """
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[2] then return false end
local token = redis.call('INCR', KEYS[1])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[1])
return token
"""

# KEYS: fence, lease. ARGV: token, ttl ms, owner. The current fence (== token when renewed), or
# false when the fence is not a number.
_RENEW = """
local fence = tonumber(redis.call('GET', KEYS[1]) or '0')
if not fence then return false end
if fence ~= tonumber(ARGV[1]) then return fence end
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2])
return fence
"""

# KEYS: lease, versions, latest, request, serving, tags. ARGV: the version key prefix. {'held', holder} while
# a learner holds the lease, else {'ok', the number of versions deleted}.
_RESET = """
local holder = redis.call('GET', KEYS[1])
if holder then return {'held', holder} end
local versions = redis.call('ZRANGE', KEYS[2], 0, -1)
for _, v in ipairs(versions) do redis.call('DEL', ARGV[1] .. v) end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6])
return {'ok', #versions}
"""

# KEYS: fence, lease. ARGV: token, owner.
_RELEASE = """
if redis.call('GET', KEYS[2]) == ARGV[2] and redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[2])
end
return 0
"""

# KEYS: fence, latest, versions, the new version's hash, serving, tags.
# ARGV: token, version, keep, version key prefix, announce channel, serve (1/0), reclaim (1/0),
# now, then field/value pairs.
# Points serving at the new version when asked to (serve) and no operator holds it, or (reclaim)
# when a rollback holds it; then drops the versions beyond the newest ``keep``, but the served
# and the tagged ones.
# Returns {status, value}: ok (the version), fenced (the fence), order (the latest), or damaged
# (the key that holds no number).
_SAVE = """
local fence = tonumber(redis.call('GET', KEYS[1]) or '0')
if not fence then return {'damaged', KEYS[1]} end
if fence ~= tonumber(ARGV[1]) then return {'fenced', fence} end
local latest = tonumber(redis.call('GET', KEYS[2]) or '0')
if not latest then return {'damaged', KEYS[2]} end
local version = tonumber(ARGV[2])
if version ~= latest + 1 then return {'order', latest} end
redis.call('DEL', KEYS[4])
redis.call('HSET', KEYS[4], unpack(ARGV, 9))
redis.call('SET', KEYS[2], version)
redis.call('ZADD', KEYS[3], version, version)
local by = redis.call('HGET', KEYS[5], 'by')
if (ARGV[6] == '1' and (not by or by == 'learner')) or (ARGV[7] == '1' and by == 'rollback') then
  redis.call('HSET', KEYS[5], 'version', version, 'by', 'learner', 'at', ARGV[8], 'reason', '')
end
local served = redis.call('HGET', KEYS[5], 'version')
local kept = {}
for _, v in ipairs(redis.call('HVALS', KEYS[6])) do kept[v] = true end
if served then kept[served] = true end
local old = redis.call('ZRANGE', KEYS[3], 0, -tonumber(ARGV[3]) - 1)
for _, v in ipairs(old) do
  if not kept[v] then
    redis.call('DEL', ARGV[4] .. v)
    redis.call('ZREM', KEYS[3], v)
  end
end
redis.call('PUBLISH', ARGV[5], version)
return {'ok', version}
"""

# KEYS: versions, serving (serve) or tags (tag). ARGV: version, then the fields to set.
# 'missing' when the version is not kept, else 'ok'.
_POINT = """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 'missing' end
redis.call('HSET', KEYS[2], unpack(ARGV, 2))
return 'ok'
"""


class RedisStore(RedisClient):
    """Checkpoints in Redis. Connects lazily: the constructor does no network I/O. A forked
    child may use it: redis-py opens fresh connections in a new process."""

    shared = True
    SCRIPTS: ClassVar[dict[str, str]] = {"acquire": _ACQUIRE, "renew": _RENEW, "release": _RELEASE,
                                         "save": _SAVE, "reset": _RESET, "point": _POINT}

    def __init__(self, url: str, prefix: str = "stream-learner", *, chunk_bytes: int = CHUNK_BYTES,
                 max_bytes: int = MAX_CHECKPOINT_BYTES, **client_options: Any) -> None:
        super().__init__(url, prefix, **client_options)
        self._chunk = chunk_bytes
        self._max = max_bytes

    def clone(self) -> RedisStore:
        return RedisStore(self._url, self._prefix, chunk_bytes=self._chunk, max_bytes=self._max,
                          **self._options)

    def key(self, model: str, suffix: str) -> str:
        return f"{{{self._prefix}:{model}}}:{suffix}"

    def _lease_keys(self, model: str) -> list[str]:
        return [self.key(model, "fence"), self.key(model, "lease")]

    def acquire(self, model: str, ttl: float, owner: str = "") -> int | None:
        token = self._script("acquire", "taking the writer lease", self._lease_keys(model),
                             [int(ttl * 1000), owner])
        return int(token) if token else None

    def renew(self, model: str, token: int, ttl: float, owner: str = "") -> None:
        fence = self._script("renew", "renewing the writer lease", self._lease_keys(model),
                             [token, int(ttl * 1000), owner])
        if fence is None:
            raise damaged(self.key(model, "fence"))
        if int(fence) != token:
            raise fenced(model, token, int(fence))

    def release(self, model: str, token: int, owner: str = "") -> None:
        self._script("release", "releasing the writer lease", self._lease_keys(model), [token, owner])

    def save(self, model: str, version: int, record: Record, token: int, keep: int, *,
             serve: bool = True, reclaim: bool = False) -> None:
        size = len(record.payload)
        if size > self._max:
            raise CheckpointError(f"model {model}: checkpoint of {size} bytes exceeds the limit of "
                                  f"{self._max} bytes")
        chunks = [record.payload[i:i + self._chunk] for i in range(0, size, self._chunk)] or [b""]
        fields: list[Any] = ["header", record.header, "signature", record.signature, "chunks", len(chunks)]
        for i, chunk in enumerate(chunks):
            fields += [f"payload:{i}", chunk]
        keys = [self.key(model, s)
                for s in ("fence", "latest", "versions", f"v:{version}", "serving", "tags")]
        args = [token, version, keep, self.key(model, "v:"), self.key(model, "announce"), int(serve),
                int(reclaim), repr(time.time()), *fields]
        status, value = self._script("save", f"saving checkpoint {model} v{version}", keys, args)
        if status == b"fenced":
            raise fenced(model, token, int(value))
        if status == b"order":
            raise out_of_order(model, version, int(value))
        if status == b"damaged":
            raise damaged(value.decode(errors="replace"))

    def latest_version(self, model: str) -> int:
        key = self.key(model, "latest")
        return number(self._call("reading the latest version", self.client.get, key), key)

    def load(self, model: str, version: int = 0) -> Record:
        """One version's record; its size is checked before its payload is read."""
        version = version or self.latest_version(model)
        key = self.key(model, f"v:{version}")
        what = f"loading checkpoint {model} v{version}"
        header, signature, chunks = (self._call(what, self.client.hmget, key, "header", "signature", "chunks")
                                     if version else (None, None, None))
        if header is None:
            raise NoCheckpoint(missing(model, version))
        count = number(chunks, f"{key} chunks")
        names = [f"payload:{i}" for i in range(count)]
        if count > self._max // self._chunk + 1:
            raise CheckpointError(f"model {model} v{version}: {count} chunks, more than a checkpoint "
                                  f"of at most {self._max} bytes has")
        sizes = self._call(what, self._sizes, key, names)
        if sum(sizes) > self._max:
            raise CheckpointError(f"model {model} v{version}: {sum(sizes)} bytes, beyond the limit of "
                                  f"{self._max} bytes: not read")
        parts = self._call(what, self.client.hmget, key, *names) if names else []
        payload = b"".join(p or b"" for p in parts)  # a damaged record: its signature check refuses it
        return Record(header, payload, (signature or b"").decode(errors="replace"), model, version)

    def _sizes(self, key: str, names: list[str]) -> list[int]:
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.hstrlen(key, name)
        return [int(n) for n in pipe.execute()]

    def versions(self, model: str) -> list[int]:
        key = self.key(model, "versions")
        found = self._call("listing versions", self.client.zrange, key, 0, -1)
        return sorted(number(v, key) for v in found)

    def models(self) -> list[str]:
        head = f"{{{self._prefix}:"
        keys = self._call("listing models", lambda: list(
            self.client.scan_iter(f"{glob_escape(head)}*}}:latest", 1000)))
        return sorted(k.decode(errors="replace")[len(head):-len("}:latest")] for k in keys)

    def reset(self, model: str) -> int:
        keys = [self.key(model, s) for s in ("lease", "versions", "latest", "request", "serving", "tags")]
        status, value = self._script("reset", f"resetting model {model}", keys, [self.key(model, "v:")])
        if status == b"held":
            raise held(model, value.decode(errors="replace"))
        return int(value)

    def served(self, model: str) -> Serving:
        key = self.key(model, "serving")
        version, by, at, reason = self._call("reading the served version", self.client.hmget, key,
                                             "version", "by", "at", "reason")
        if version is None:
            return Serving(self.latest_version(model), "", 0.0, "")
        return Serving(number(version, key), by.decode(errors="replace") if by else "",
                       float(at or 0), reason.decode(errors="replace") if reason else "")

    def serve(self, model: str, version: int, *, by: str, reason: str = "") -> None:
        version = version or self.latest_version(model)
        status = self._script("point", f"serving {model} v{version}",
                              [self.key(model, "versions"), self.key(model, "serving")],
                              [version, "version", version, "by", by, "at", repr(time.time()),
                               "reason", reason])
        if status == b"missing":
            raise NoCheckpoint(missing(model, version))

    def tag(self, model: str, name: str, version: int) -> None:
        status = self._script("point", f"tagging {model} v{version}",
                              [self.key(model, "versions"), self.key(model, "tags")],
                              [version, name, version])
        if status == b"missing":
            raise NoCheckpoint(missing(model, version))

    def untag(self, model: str, name: str) -> bool:
        return bool(self._call(f"untagging {name}", self.client.hdel, self.key(model, "tags"), name))

    def tags(self, model: str) -> dict[str, int]:
        key = self.key(model, "tags")
        found = self._call("reading the tags", self.client.hgetall, key)
        return {k.decode(errors="replace"): number(v, key) for k, v in found.items()}

    def request(self, model: str, doc: bytes) -> None:
        self._call(f"sending a request to model {model}'s learner", self.client.set,
                   self.key(model, "request"), doc)

    def requested(self, model: str) -> bytes | None:
        value: bytes | None = self._call("reading the operator's request", self.client.get,
                                         self.key(model, "request"))
        return value
