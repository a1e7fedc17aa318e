"""``make demo``: replay a River dataset through a learner and a frozen predictor, live.

Starts the local stack unless it is already up, streams the dataset into a fresh events
topic at a steady rate, runs ``stream-learner learn`` and ``stream-learner serve`` as real
processes, and prints progress once a second: events/s, the rolling prequential metric and
the model version each side uses. At the end it prints a summary and stops everything it
started (the stack too, if it started it).
"""

from __future__ import annotations

import argparse
import json
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError

from stream_learner.checkpoint import read_meta
from stream_learner.errors import StreamLearnerError
from stream_learner.state.redis import RedisStore
from tools.events import dataset_rows, event_bytes
from tools.localstack import HOST, DevStack, StackError
from tools.service import service_env, spawn

CLOSE_S = 5.0  # for the records in flight when the demo stops
CHALLENGER = "tree=tree.HoeffdingTreeClassifier()"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="stream-learner live demo")
    parser.add_argument("--dataset", default="Phishing")
    parser.add_argument("--repeat", type=int, default=8, help="replays of the dataset")
    parser.add_argument("--rate", type=float, default=1000.0, help="events per second")
    parser.add_argument("--stack-dir", type=Path, default=DevStack().directory,
                        help="the local stack's data (make stack-up's by default)")
    parser.add_argument("--kafka-port", type=int, default=DevStack().kafka_port)
    parser.add_argument("--controller-port", type=int, default=DevStack().controller_port)
    parser.add_argument("--redis-port", type=int, default=DevStack().redis_port)
    parser.add_argument("--http-port", type=int, default=8000,
                        help="the learner's dashboard and metrics; the predictor's is the next port")
    args = parser.parse_args(argv)
    stack = DevStack(args.stack_dir.resolve(), args.kafka_port, args.controller_port, args.redis_port)
    processes: list[subprocess.Popen[bytes]] = []
    started_stack = stack.pid("kafka") is None or stack.pid("redis") is None
    try:
        if started_stack:
            stack.up()
        return stream(args, stack, processes)
    except StackError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ndemo: interrupted; stopping what it started", file=sys.stderr)
        return 130
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
            p.wait(10)  # reaped: no zombie outlives the demo
        if started_stack:
            stack.down()


def stream(args: argparse.Namespace, stack: DevStack, processes: list[subprocess.Popen[bytes]]) -> int:
    """Stream the dataset through a learner and a predictor, with a line a second, and sum up."""
    bootstrap = f"{HOST}:{stack.kafka_port}"
    redis_url = f"redis://{HOST}:{stack.redis_port}/0"
    run = f"demo-{int(time.time())}"
    common = {"bootstrap_servers": bootstrap, "redis_url": redis_url, "hmac_key": secrets.token_hex(16),
              "model": run, "events_topic": f"{run}.events", "dead_letter_topic": f"{run}.dlq",
              "checkpoint_every": 1000, "checkpoint_interval": 1}
    # A challenger and a drift detector, so that the dashboard shows the model's lifecycle too.
    learner_env = service_env({**common, "predictions_topic": f"{run}.predictions",
                               "http_port": args.http_port, "challengers": (CHALLENGER,),
                               "drift_detector": "drift.ADWIN()"})
    serve_env = service_env({**common, "predictions_topic": f"{run}.predictions.frozen",
                             "wait_for_model": 120, "http_port": args.http_port + 1})
    logs = stack.directory / run
    logs.mkdir(parents=True, exist_ok=True)
    store = RedisStore(redis_url)
    clients: list[KafkaProducer | KafkaConsumer] = []
    try:
        rows = dataset_rows(args.dataset)
        events = [e for rep in range(args.repeat) for e in event_bytes(rows, f"{args.dataset}-{rep}")]
        producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
        clients.append(producer)
        # ``main`` kills and reaps them on the way out, Ctrl-C included.
        processes.append(spawn("learn", learner_env, stdout=logs / "learner.log", die_with_parent=False))
        processes.append(spawn("serve", serve_env, stdout=logs / "predictor.log", die_with_parent=False))
        watch = KafkaConsumer(f"{run}.predictions", f"{run}.predictions.frozen", bootstrap_servers=bootstrap,
                              group_id=None, auto_offset_reset="earliest")
        clients.append(watch)
        print(f"demo {run}: {len(events)} {args.dataset} events at {args.rate:.0f}/s (logs in {logs})")
        print(f"dashboards: http://{HOST}:{args.http_port}/ (learner), http://{HOST}:{args.http_port + 1}/ "
              "(predictor; POST /predict answers there)")
        print(f"{'time':>5}  {'sent':>6}  {'learned':>7}  {'events/s':>8}  {'rolling acc':>11}  "
              f"{'learner v':>9}  {'frozen preds':>12}  {'frozen v':>8}")
        counts = {"learn": 0, "frozen": 0}
        versions = {"learn": 0, "frozen": 0}
        t0 = last = time.monotonic()
        sent = last_count = 0
        while counts["learn"] < len(events) or counts["frozen"] < len(events):
            now = time.monotonic()
            due = min(len(events), int((now - t0) * args.rate))
            for key, value in events[sent:due]:
                producer.send(f"{run}.events", key=key.encode(), value=value)
            sent = max(sent, due)
            for records in watch.poll(timeout_ms=100).values():
                for record in records:
                    doc = json.loads(record.value)
                    counts[doc["mode"]] += 1
                    versions[doc["mode"]] = doc["model_version"]
            if any(p.poll() is not None for p in processes):
                raise SystemExit(f"a service exited early; see {logs}")
            if now - t0 > 60 + len(events) / args.rate:
                raise SystemExit(f"the demo did not finish in time; see {logs}")
            if now - last >= 1.0:
                rolling = _rolling_metric(store, run)
                rate = (counts["learn"] - last_count) / (now - last)
                print(f"{now - t0:5.1f}  {sent:6d}  {counts['learn']:7d}  {rate:8.0f}  {rolling:>11}  "
                      f"{versions['learn']:9d}  {counts['frozen']:12d}  {versions['frozen']:8d}", flush=True)
                last, last_count = now, counts["learn"]
        producer.flush()
        for p in processes:
            p.send_signal(signal.SIGTERM)
        for p in processes:
            p.wait(60)
        meta = read_meta(store.load(run))
        print(f"\nsummary: {len(events)} events; learner predicted {counts['learn']} and learned "
              f"{meta.learned} (checkpoint v{meta.version}); frozen predictor predicted {counts['frozen']} "
              f"with versions up to v{versions['frozen']}")
        print("prequential metrics: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(meta.metrics.items())))
        return 0
    finally:
        _close(clients)
        store.close()


def _close(clients: list[KafkaProducer | KafkaConsumer]) -> None:
    """Close the demo's clients while the broker still runs: left to kafka-python's exit hook, a
    producer with records in flight flushes to a stopped broker and prints a traceback."""
    for client in clients:
        try:
            client.close(timeout=CLOSE_S) if isinstance(client, KafkaProducer) else client.close()
        except KafkaError as exc:
            print(f"demo: closing a Kafka client: {exc}", file=sys.stderr)


def _rolling_metric(store: RedisStore, model: str) -> str:
    try:
        meta = read_meta(store.load(model))
    except StreamLearnerError:
        return "-"
    value: Any = next((v for k, v in meta.metrics.items() if "@" in k), None)
    return "-" if value is None else f"{value:.4f}"


if __name__ == "__main__":
    sys.exit(main())
