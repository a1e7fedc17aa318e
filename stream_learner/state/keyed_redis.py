"""The key scope's store in Redis (layout: ``state.keyed_base``). Connects lazily: the
constructor does no network I/O. Its errors are the model store's: ``StoreUnavailable`` for a
server that does not answer, ``CheckpointError`` for one that refuses."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis

from stream_learner.checkpoint import Record
from stream_learner.config import Settings
from stream_learner.errors import CheckpointError, StoreUnavailable
from stream_learner.state.base import fenced, number, out_of_order
from stream_learner.state.keyed_base import CHANGES_KEPT, SWEEP_LIMIT, PartitionSave, reaches_back

# KEYS: fence
# return: the new fencing token
_CLAIM = "return redis.call('INCR', KEYS[1])"

# KEYS: fence, meta, models, seen, changed
# ARGV: token, version, header, payload, signature, expire_before, changes kept, sweep limit,
#       n, then n times: key, model record, record time of its latest event
# return: {'ok', keys removed as idle} | {'fenced', current fence} | {'order', latest version}
_SAVE = """
local fence = tonumber(redis.call('GET', KEYS[1]) or '0')
if fence ~= tonumber(ARGV[1]) then return {'fenced', fence} end
local version = tonumber(ARGV[2])
local latest = tonumber(redis.call('HGET', KEYS[2], 'v') or '0')
if version ~= latest + 1 then return {'order', latest} end
redis.call('HSET', KEYS[2], 'v', version, 'h', ARGV[3], 'p', ARGV[4], 's', ARGV[5])
local n = tonumber(ARGV[9])
for i = 0, n - 1 do
  local key = ARGV[10 + 3 * i]
  redis.call('HSET', KEYS[3], key, ARGV[11 + 3 * i])
  redis.call('ZADD', KEYS[4], ARGV[12 + 3 * i], key)
  redis.call('ZADD', KEYS[5], version, key)
end
local removed = 0
if tonumber(ARGV[6]) > 0 then
  local idle = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', '(' .. ARGV[6], 'LIMIT', 0, tonumber(ARGV[8]))
  for _, key in ipairs(idle) do
    redis.call('HDEL', KEYS[3], key)
    redis.call('ZREM', KEYS[4], key)
    redis.call('ZADD', KEYS[5], version, key)
  end
  removed = #idle
end
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', '(' .. (version - tonumber(ARGV[7])))
return {'ok', removed}
"""


class RedisKeyedStore:
    shared = True

    def __init__(self, url: str, prefix: str = "stream-learner", **client_options: Any) -> None:
        self._url = url
        self._prefix = prefix
        self._options = {"socket_timeout": 10.0, "socket_connect_timeout": 5.0, **client_options}
        self._client: redis.Redis | None = None
        self._scripts: dict[str, Any] = {}

    @classmethod
    def for_settings(cls, settings: Settings) -> RedisKeyedStore:
        timeout = settings.redis_timeout
        return cls(settings.redis_url, settings.key_prefix, socket_timeout=timeout,
                   socket_connect_timeout=min(timeout, 5.0))

    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            try:
                self._client = redis.Redis.from_url(self._url, **self._options)
            except ValueError as exc:
                raise StoreUnavailable(f"--redis-url: {exc}") from None
            self._scripts = {"claim": self._client.register_script(_CLAIM),
                             "save": self._client.register_script(_SAVE)}
        return self._client

    def key(self, model: str, partition: int, suffix: str) -> str:
        return f"{{{self._prefix}:{model}#{partition}}}:{suffix}"

    def _keys(self, model: str, partition: int, *suffixes: str) -> list[str]:
        return [self.key(model, partition, s) for s in suffixes]

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except redis.ConnectionError as exc:
            raise StoreUnavailable(f"Redis unreachable while {what}: {exc}") from None
        except redis.TimeoutError as exc:
            raise StoreUnavailable(f"Redis timed out while {what}: {exc}") from None
        except redis.RedisError as exc:
            raise CheckpointError(f"Redis refused {what}: {type(exc).__name__}: {exc}") from None

    def claim(self, model: str, partition: int) -> int:
        _ = self.client
        token = self._call(f"claiming partition {partition} of model {model}", self._scripts["claim"],
                           self._keys(model, partition, "fence"), [])
        return int(token)

    def partition(self, model: str, partition: int) -> Record | None:
        key = self.key(model, partition, "meta")
        found = self._call(f"reading partition {partition} of model {model}", self.client.hmget,
                           key, ["v", "h", "p", "s"])
        if found[0] is None:
            return None
        version = number(found[0], key)
        if found[1] is None or found[2] is None or found[3] is None:
            raise CheckpointError(f"Redis key {key} is incomplete: someone wrote it by hand")
        return Record(found[1], found[2], found[3].decode(errors="replace"), f"{model}#{partition}", version)

    def save_partition(self, model: str, save: PartitionSave) -> int:
        _ = self.client
        where = f"{model}#{save.partition}"
        record = save.record
        args: list[Any] = [save.token, save.version, record.header, record.payload, record.signature,
                           save.expire_before, CHANGES_KEPT, SWEEP_LIMIT, len(save.models)]
        for key, blob in save.models.items():
            args += [key, blob, save.seen[key]]
        keys = self._keys(model, save.partition, "fence", "meta", "models", "seen", "changed")
        outcome, value = self._call(f"saving partition {save.partition} of model {model} v{save.version}",
                                    self._scripts["save"], keys, args)
        if outcome == b"fenced":
            raise fenced(where, save.token, int(value))
        if outcome == b"order":
            raise out_of_order(where, save.version, int(value))
        return int(value)

    def key_models(self, model: str, partition: int, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        found: list[bytes | None] = self._call(
            f"reading key models of partition {partition} of model {model}", self.client.hmget,
            self.key(model, partition, "models"), list(keys))
        return found

    def versions(self, model: str, partitions: Sequence[int]) -> dict[int, int]:
        pipe = self.client.pipeline(transaction=False)  # one slot per partition: no MULTI across them
        for p in partitions:
            pipe.hget(self.key(model, p, "meta"), "v")
        found = self._call(f"reading the versions of model {model}", pipe.execute)
        return {p: number(v, self.key(model, p, "meta")) for p, v in zip(partitions, found, strict=True)}

    def changed(self, model: str, partition: int, after: int, upto: int) -> list[str] | None:
        if reaches_back(after, upto):
            return None
        found = self._call(f"reading the changed keys of partition {partition} of model {model}",
                           self.client.zrangebyscore, self.key(model, partition, "changed"),
                           f"({after}", upto)
        return sorted(k.decode() for k in found)

    def key_count(self, model: str, partition: int) -> int:
        count: int = self._call(f"counting the keys of partition {partition} of model {model}",
                                self.client.hlen, self.key(model, partition, "models"))
        return count

    def key_names(self, model: str, partition: int) -> list[str]:
        found = self._call(f"listing the keys of partition {partition} of model {model}", self.client.hkeys,
                           self.key(model, partition, "models"))
        return sorted(k.decode() for k in found)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
