"""The key scope's store in Redis (layout: ``state.keyed_base``). Connects lazily: the
constructor does no network I/O. Its errors are the model store's: ``StoreUnavailable`` for a
server that does not answer, ``CheckpointError`` for one that refuses."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from stream_learner.checkpoint import Record
from stream_learner.errors import CheckpointError
from stream_learner.state.base import fenced, number, out_of_order
from stream_learner.state.keyed_base import CHANGES_KEPT, SWEEP_LIMIT, PartitionSave, reaches_back
from stream_learner.state.redis_client import RedisClient, glob_escape

# KEYS: owner
# return: the new fencing token
_CLAIM = "return redis.call('INCR', KEYS[1])"

# KEYS: owner, meta, models, seen, changed
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

# KEYS: owner, meta, models, seen, changed
# return: the key models deleted (the fence grows by one: the partition's owner writes no more)
_RESET = """
local n = redis.call('HLEN', KEYS[3])
redis.call('INCR', KEYS[1])
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
return n
"""
SUFFIXES = ("owner", "meta", "models", "seen", "changed")


class RedisKeyedStore(RedisClient):
    shared = True
    SCRIPTS: ClassVar[dict[str, str]] = {"claim": _CLAIM, "save": _SAVE, "reset": _RESET}

    def key(self, model: str, partition: int, suffix: str) -> str:
        return f"{{{self._prefix}:{model}#{partition}}}:{suffix}"

    def _keys(self, model: str, partition: int, *suffixes: str) -> list[str]:
        return [self.key(model, partition, s) for s in suffixes]

    def claim(self, model: str, partition: int) -> int:
        token = self._script("claim", f"claiming partition {partition} of model {model}",
                             self._keys(model, partition, "owner"), [])
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
        where = f"{model}#{save.partition}"
        record = save.record
        args: list[Any] = [save.token, save.version, record.header, record.payload, record.signature,
                           save.expire_before, CHANGES_KEPT, SWEEP_LIMIT, len(save.models)]
        for key, blob in save.models.items():
            args += [key, blob, save.seen[key]]
        keys = self._keys(model, save.partition, *SUFFIXES)
        outcome, value = self._script("save", f"saving partition {save.partition} of model {model} "
                                      f"v{save.version}", keys, args)
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

    def models(self) -> list[str]:
        return sorted({model for model, _ in self._owners("*")})

    def partitions(self, model: str) -> list[int]:
        return sorted(p for m, p in self._owners(glob_escape(model) + "#*") if m == model)

    def _owners(self, pattern: str) -> list[tuple[str, int]]:
        """(model, partition) of each partition ever claimed whose tag matches ``pattern``."""
        head = f"{{{self._prefix}:"
        found = self._call("listing key-scope models", lambda: list(
            self.client.scan_iter(f"{glob_escape(head)}{pattern}}}:owner", 1000)))
        out = []
        for raw in found:
            model, _, partition = raw.decode(errors="replace")[len(head):-len("}:owner")].rpartition("#")
            if model and partition.isdigit():
                out.append((model, int(partition)))
        return out

    def reset_partition(self, model: str, partition: int) -> int:
        deleted = self._script("reset", f"resetting partition {partition} of model {model}",
                               self._keys(model, partition, *SUFFIXES), [])
        return int(deleted)
