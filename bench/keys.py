"""``make bench MODEL_SCOPE=key``: key scope's learning throughput with 1, 2 and 3 learner
processes on 6 partitions, what a key model costs from the cache and from Redis, and what a
partition's checkpoint costs, on the run's broker and Redis.

Each learner count learns the same keyed events, already in a 6-partition topic, as a model of
its own (its own group). Throughput is taken over the middle 80 % of the predictions' Kafka
timestamps, so that the group's joining at start is not counted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from consumers.partitions import Owned, Partitions
from stream_learner.checkpoint import Record
from stream_learner.config import Settings
from stream_learner.key_cache import KeyCache
from stream_learner.key_records import key_slot, open_key, seal_key
from stream_learner.keyed import KeyedEngine, KeyModel
from stream_learner.state.keyed_base import PartitionSave
from stream_learner.state.keyed_redis import RedisKeyedStore
from tools.events import dataset_rows
from tools.localstack import create_topics
from tools.service import service_env, spawn, stop

if TYPE_CHECKING:
    from bench.run import Run

PARTITIONS = 6
LEARNERS = (1, 2, 3)


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-scope", choices=("global", "key"), default="global",
                        help="key: measure key scope only (this module)")
    parser.add_argument("--keys", type=int, default=1000, help="distinct keys of the key-scope events")


def keyed_events(dataset: str, count: int, keys: int) -> list[tuple[str, bytes]]:
    rows = dataset_rows(dataset)
    out = []
    for i in range(count):
        x, y = rows[i % len(rows)]
        key = f"k-{i * 7919 % keys}"
        out.append((key, json.dumps({"id": f"e-{i}", "key": key, "x": x, "y": y}).encode()))
    return out


def measure(run: Run) -> dict[str, Any]:
    from bench.run import produce_keyed

    args = run.args
    events = keyed_events(args.dataset, args.events, args.keys)
    create_topics(run.bootstrap, ["bench.keyed"], partitions=PARTITIONS)
    produce_keyed(run.bootstrap, "bench.keyed", events)
    base = replace(run.base, model_scope="key", events_topic="bench.keyed", checkpoint_interval=1.0)
    throughput = {n: learners_eps(run, base, n) for n in LEARNERS}
    costs = cache_costs(base, args.model)
    saves = checkpoint_costs(base, args.model)
    for n, eps in throughput.items():
        print(f"  key scope, {n} learner(s) on {PARTITIONS} partitions, {base.kafka_client} "
              f"{eps:10.0f} events/s", flush=True)
    print(f"  a key model: cache hit {costs['hit_us']:.1f} us, miss (read from Redis, verified) "
          f"{costs['miss_us']:.0f} us, in a batch's read {costs['batch_miss_us']:.0f} us a key", flush=True)
    for save in saves:
        print(f"  a partition's checkpoint of {save['keys']} keys: {save['ms']:.1f} ms", flush=True)
    return {"partitions": PARTITIONS, "keys": args.keys, "events": args.events,
            "kafka_client": base.kafka_client,
            "learners_eps": {str(n): round(eps) for n, eps in throughput.items()},
            "cache": costs, "checkpoints": saves}


def learners_eps(run: Run, base: Settings, n: int) -> float:
    """``n`` learners of one model in one group, over the topic; events/s."""
    from bench.run import output_span

    settings = replace(base, model=f"bench-keys-{n}", predictions_topic=f"bench.keyed.out.{n}")
    procs = [spawn("learn", service_env(replace(settings, instance_id=f"bench-{i}")),
                   stdout=run.work / f"keys-{n}-{i}.log") for i in range(n)]
    try:
        _, _, records = output_span(run.bootstrap, settings.predictions_topic, run.args.events)
    finally:
        for proc in procs:
            stop(proc)
    stamps: list[int] = sorted(int(r.timestamp) for r in records)
    lo, hi = stamps[len(stamps) // 10], stamps[len(stamps) * 9 // 10]
    return float(len(stamps) * 0.8 / max((hi - lo) / 1000, 1e-3))


def cache_costs(settings: Settings, spec: str, count: int = 2000) -> dict[str, float]:
    """Microseconds per key model: from the cache, read alone from Redis, read in a batch."""
    store = RedisKeyedStore.for_settings(settings)
    model, secret = "bench-cache", settings.hmac_key.encode()
    engine = KeyedEngine(spec)
    blob_of = {f"k-{i}": seal_key(engine.fresh_model(), slot=key_slot(model, 0, f"k-{i}"), key_id="k1",
                                  secret=secret) for i in range(count)}
    token = store.claim(model, 0)
    store.save_partition(model, PartitionSave(0, 1, token, Record(b"{}", b"", ""), blob_of,
                                              dict.fromkeys(blob_of, 0)))
    keys, signing = list(blob_of), {"k1": secret}
    cache: KeyCache[KeyModel] = KeyCache(count)
    started = time.perf_counter()
    for key in keys:
        blob = store.key_models(model, 0, [key])[0]
        assert blob is not None
        cache.put(0, key, open_key(blob, slot=key_slot(model, 0, key), keys=signing))
    miss = (time.perf_counter() - started) / count
    started = time.perf_counter()
    for key in keys:
        cache.get(0, key)
    hit = (time.perf_counter() - started) / count
    started = time.perf_counter()
    for first in range(0, count, 500):
        batch = keys[first:first + 500]
        for key, blob in zip(batch, store.key_models(model, 0, batch), strict=True):
            assert blob is not None
            open_key(blob, slot=key_slot(model, 0, key), keys=signing)
    batched = (time.perf_counter() - started) / count
    return {"hit_us": round(hit * 1e6, 2), "miss_us": round(miss * 1e6, 1),
            "batch_miss_us": round(batched * 1e6, 1)}


class _NoSends:
    """A publisher with nothing to flush: the checkpoints measured here follow no predictions."""

    def flush(self, upto: int | None = None) -> None:
        return None


def checkpoint_costs(settings: Settings, spec: str) -> list[dict[str, Any]]:
    """Milliseconds of one partition's checkpoint with 100 and 1,000 changed key models."""
    out = []
    for keys in (100, 1000):
        s = replace(settings, model=f"bench-save-{keys}", model_spec=spec, key_cache_size=keys)
        engine = KeyedEngine(spec)
        cache: KeyCache[KeyModel] = KeyCache(keys)
        parts = Partitions(s, RedisKeyedStore.for_settings(s), engine, cache)
        owned: Owned = parts.take(0)
        times = []
        for _ in range(5):
            for i in range(keys):
                cache.put(0, f"k-{i}", engine.fresh_model(), changed=True)
            owned.since, owned.offset = keys, 0
            started = time.perf_counter()
            assert parts.save(owned, _NoSends(), "bench") is not None  # type: ignore[arg-type]
            times.append(time.perf_counter() - started)
        out.append({"keys": keys, "ms": round(statistics.median(times) * 1000, 2)})
    return out
