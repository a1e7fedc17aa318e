"""``make bench``: the service next to what a user could write by hand, measured in one run.

Starts its own Kafka broker and Redis (tools/localstack.py), replays a River dataset (repeated to
``--events``) and measures, on the same events and the same model:

  R  the raw River loop in-process: decode the same JSON, predict, learn;
  P  the raw River loop of predictions in-process, with the model S wrote: the frozen
     predictor's limit;
  K  a bare kafka-python loop on the same broker: consume, decode, encode, produce, no model;
  H  the loop a user could write by hand with the service's clients and the same model;
  S  the learner end to end (``stream-learner learn`` as a process, checkpoint every 10,000);
     then S / (1 / (1/R + 1/K)), the additive bound, and S / H;
  the frozen predictor with 1 and 2 processes in one group; event-to-prediction latency at
  half of S, with the learner's defaults and with ``--busy-poll-ms``, and of H at half of S
  and at half of H, with the machine's stalls and speed beside it and beside S; checkpoint size
  and loop stall for three models; recovery after SIGKILL.

S, the frozen predictor, recovery and the latency at half of S are measured on both Kafka
clients (``--kafka-client``): the top-level figures are librdkafka's, ``kafka_python`` holds
kafka-python's.

Throughputs come from the Kafka timestamps of the first and last output records, so process
start-up is not counted. Prints a table and writes ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import multiprocessing
import os
import pickle
import platform
import re
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import http as bench_http  # noqa: E402
from bench import keys as bench_keys  # noqa: E402
from consumers.clients.librdkafka import make_consumer, make_producer, poll  # noqa: E402
from stream_learner.config import Settings  # noqa: E402
from tools.events import dataset_events  # noqa: E402
from tools.localstack import KAFKA_VERSION, KafkaBroker, RedisServer, create_topics  # noqa: E402
from tools.service import service_env, spawn, stop  # noqa: E402

# kafka-python wakes its IO thread on every send once a partition has two batches queued, and
# each wakeup hands the GIL over: 16 KiB batches (its default) halve its producer's throughput.
KAFKA_PYTHON_BATCH_BYTES = 1024 * 1024
KAFKA_PYTHON_LINGER_MS = 5
# The load generator sleeps only when it is this far ahead, then sends what is due: ~1,000
# wakeups a second instead of one per event, on the cores the learner and the broker share.
GENERATOR_TICK_S = 0.001
# The probe of the machine beside S and the latency phase: it sleeps STALL_PROBE_S at a time
# and notes the wakeups more than STALL_MS late, and every SPEED_EVERY_S it times a fixed piece
# of River work (SPEED_EVENTS steps of SPEED_MODEL), the machine's speed at that moment.
STALL_PROBE_S = 0.002
STALL_MS = 10
SPEED_EVERY_S = 0.1
SPEED_EVENTS = 20

CHECKPOINT_MODELS = {
    "logreg": "preprocessing.StandardScaler() | linear_model.LogisticRegression()",
    "hoeffding_tree": "tree.HoeffdingTreeClassifier()",
    "arf10": "forest.ARFClassifier(n_models=10, seed=42)",
}
SPEED_MODEL = CHECKPOINT_MODELS["logreg"]


def bench_events(dataset: str, count: int) -> list[bytes]:
    """``count`` events of ``dataset``, the ids ``b-0`` onwards: just the bytes, which is all the
    loops, producers and load generator of the bench send."""
    return [raw for _, raw in dataset_events(dataset, count, "b")]


def user_model(spec: str) -> tuple[Any, Callable[[dict[str, Any]], Any]]:
    """The model of a user's own loop, and what it predicts with: a classifier's probabilities
    (as the service publishes them), a regressor's value."""
    from stream_learner.models import build_model, infer_task

    model = build_model(spec)
    return model, model.predict_one if infer_task(model) == "regression" else model.predict_proba_one


def raw_river(events: list[bytes], spec: str) -> float:
    """R: what a user's own loop does with the same bytes."""
    model, predict = user_model(spec)
    start = time.perf_counter()
    for raw in events:
        doc = json.loads(raw)
        predict(doc["x"])
        model.learn_one(doc["x"], doc["y"])
    return len(events) / (time.perf_counter() - start)


def produce(bootstrap: str, topic: str, events: list[bytes]) -> None:
    produce_keyed(bootstrap, topic, [(str(i), raw) for i, raw in enumerate(events)])


def produce_keyed(bootstrap: str, topic: str, events: list[tuple[str, bytes]]) -> None:
    """(record key, value) to ``topic``, in order."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=256 * 1024)
    for key, raw in events:
        producer.send(topic, raw, key=key.encode())
    producer.flush()
    producer.close()


def bare_kafka(bootstrap: str, source: str, sink: str, count: int) -> float:
    """K: consume, decode, encode, produce, nothing else, with kafka-python's clients."""
    consumer = KafkaConsumer(source, bootstrap_servers=bootstrap, group_id=f"bench-bare-{sink}",
                             auto_offset_reset="earliest", enable_auto_commit=False, max_poll_records=500)
    # The best bare kafka-python loop we know how to write: 5 ms linger, 1 MiB batches.
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=KAFKA_PYTHON_LINGER_MS,
                             batch_size=KAFKA_PYTHON_BATCH_BYTES)
    seen = 0
    start = None
    while seen < count:
        for records in consumer.poll(timeout_ms=200).values():
            start = start or time.perf_counter()
            for r in records:
                doc = json.loads(r.value)
                producer.send(sink, json.dumps({"id": doc["id"], "prediction": None}).encode())
            seen += len(records)
    producer.flush()
    elapsed = time.perf_counter() - (start or 0)
    consumer.close()
    producer.close()
    return count / elapsed


def hand_rolled(bootstrap: str, source: str, sink: str, spec: str, ready: Any) -> None:
    """H: the loop a user could write by hand with the service's clients (librdkafka's consumer
    and producer, made as the service makes them) and the same model: consume, decode, predict,
    learn, encode, produce; no validation, metrics, checkpoints or delivery tracking. Runs in a
    process of its own, as the learner does, from the start of ``source`` until terminated;
    sets ``ready`` once it is assigned its partitions."""
    import orjson

    settings = Settings(bootstrap_servers=bootstrap, group_id=f"bench-hand-{sink}")
    consumer = make_consumer(settings, "serve")
    consumer.subscribe([source])
    producer = make_producer(settings, "bench-hand")
    model, predict = user_model(spec)
    assigned = False  # a plain flag: asking ``ready`` takes a lock in every pass
    while True:
        for r in poll(consumer, 500, 0.1).records:
            doc = orjson.loads(r.value() or b"")
            x = doc["x"]
            prediction = predict(x)
            model.learn_one(x, doc["y"])
            producer.produce(sink, orjson.dumps({"id": doc["id"], "prediction": prediction},
                                                option=orjson.OPT_NON_STR_KEYS))
        producer.poll(0)  # delivery reports, so that the queue does not fill
        if not assigned and consumer.assignment():
            assigned = True
            ready.set()


def start_and_wait(proc: Any, ready: Any, failure: str) -> None:
    """Start a helper process and wait up to 60 s for it to set ``ready``; otherwise stop it
    and end the bench with ``failure``."""
    proc.start()
    if not ready.wait(60):
        proc.terminate()
        proc.join()
        raise SystemExit(f"bench: {failure} in 60 s")


class HandRolled:
    """``hand_rolled`` in a process of its own, started and waited for as the learner is."""

    def __init__(self, bootstrap: str, source: str, sink: str, spec: str) -> None:
        context = multiprocessing.get_context("spawn")
        self._ready = context.Event()
        self.proc = context.Process(target=hand_rolled, args=(bootstrap, source, sink, spec, self._ready))

    def __enter__(self) -> HandRolled:
        start_and_wait(self.proc, self._ready, "the hand-rolled loop was not assigned its partitions")
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.join()

    @property
    def pid(self) -> int:
        assert self.proc.pid is not None, "not started"
        return self.proc.pid


def output_span(bootstrap: str, topic: str, count: int, timeout: float = 600
                ) -> tuple[float, float, list[Any]]:
    """Read ``count`` records of a topic: (first, last) CreateTime in seconds, and the records."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    deadline = time.monotonic() + timeout
    while not consumer.partitions_for_topic(topic):
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: no topic {topic}")
        time.sleep(0.2)
    tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
    # Wait on the end offsets, a cheap request, so that reading does not compete for the CPU
    # with the process being measured.
    while sum(consumer.end_offsets(tps).values()) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: fewer than {count} records on {topic} after {timeout} s")
        time.sleep(0.5)
    consumer.assign(tps)
    consumer.seek_to_beginning()
    records: list[Any] = []
    while len(records) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: only {len(records)} of {count} records on {topic}")
        for batch in consumer.poll(timeout_ms=200).values():
            records.extend(batch)
    consumer.close()
    stamps = [r.timestamp for r in records]
    return min(stamps) / 1000, max(stamps) / 1000, records


def events_per_second(first: float, last: float, count: int) -> float:
    return count / max(last - first, 1e-3)


def checkpoint_cost(settings: Settings, bootstrap: str, dataset: str, spec: str, count: int,
                    every: int, workdir: Path) -> dict[str, Any]:
    """Run ``stream-learner learn`` over ``count`` events, checkpointing every ``every``, and
    read what each checkpoint during the run cost from its log."""
    topic = f"bench.ckpt.{abs(hash(spec)) % 10**8}.{time.time_ns()}"
    create_topics(bootstrap, [topic, topic + ".out"])
    produce(bootstrap, topic, bench_events(dataset, count))
    s = Settings(**{**vars(settings), "events_topic": topic, "model": topic, "model_spec": spec,
                    "predictions_topic": topic + ".out", "checkpoint_every": every,
                    "checkpoint_interval": 3600.0})
    log = workdir / f"{topic}.log"
    learner = spawn("learn", service_env(s), stdout=log, append=True)
    output_span(bootstrap, s.predictions_topic, count)
    stop(learner)
    lines = re.findall(r"\(interval\): \d+ events, (\d+) bytes, loop blocked ([\d.]+) ms",
                       log.read_text(errors="replace"))
    if not lines:
        raise SystemExit(f"bench: no checkpoint during the run in {log}")
    pauses = [float(ms) / 1000 for _, ms in lines]
    return {"model": spec, "dataset": dataset, "events": count, "checkpoints": len(pauses),
            "bytes": int(lines[-1][0]),
            "blocked_ms_p50": round(1000 * statistics.median(pauses), 2),
            "blocked_ms_p99": round(1000 * _quantile(pauses, 0.99), 2),
            "pickle_ms": round(1000 * pickle_seconds(s), 2)}


def checkpoint_dataset(name: str) -> str:
    """The checkpoint-cost models are classifiers, LogReg a binary one: they learn ``name``
    when it is a binary classification dataset, and Phishing otherwise."""
    from river import datasets

    return name if getattr(datasets, name)().task == datasets.base.BINARY_CLF else "Phishing"


def stored_state(settings: Settings) -> Any:
    """The latest checkpoint's state of ``settings.model``."""
    from stream_learner.checkpoint import open_record
    from stream_learner.state.redis import RedisStore

    store = RedisStore.for_settings(settings)
    state = open_record(store.load(settings.model), settings.signing_keys()).state
    store.close()
    return state


def raw_predict(events: list[bytes], model: Any) -> float:
    """P: what a user's own loop of predictions does with the same bytes and a trained model
    (the frozen predictor's limit)."""
    from stream_learner.models import infer_task

    predict = model.predict_one if infer_task(model) == "regression" else model.predict_proba_one
    start = time.perf_counter()
    for raw in events:
        predict(json.loads(raw)["x"])
    return len(events) / (time.perf_counter() - start)


def pickle_seconds(settings: Settings) -> float:
    """How long pickling the final state takes: what an inline checkpoint would block for."""
    state = stored_state(settings)
    start = time.perf_counter()
    pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    return time.perf_counter() - start


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def tail(bootstrap: str, topic: str) -> KafkaConsumer:
    """A consumer positioned at the current end of every partition of an existing topic.

    Assigned, not subscribed, and its positions resolved before it returns: whatever is
    published afterwards is read, with no group join or metadata refresh to race against.
    """
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             fetch_max_wait_ms=10)
    deadline = time.monotonic() + 60
    while not consumer.partitions_for_topic(topic):
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: no topic {topic}")
        time.sleep(0.1)
    tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
    consumer.assign(tps)
    consumer.seek_to_end(*tps)
    for tp in tps:
        consumer.position(tp)
    return consumer


def offer(bootstrap: str, topic: str, dataset: str, rate: float, count: int) -> None:
    """The load generator, in a process of its own: ``count`` events at ``rate`` per second.

    librdkafka's producer with its default linger (5 ms, counted in the latency measured), the
    cheapest we have: the generator shares the machine's two cores with the broker and the
    learner, where real upstream producers would not. A shorter linger costs the broker a
    produce request every few events, which shows in the learner's tail latency."""
    import confluent_kafka

    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    events = bench_events(dataset, count)  # before the clock starts: a late start sends a burst
    start = time.perf_counter()
    for i, raw in enumerate(events):
        wait = start + i / rate - time.perf_counter()
        if wait > GENERATOR_TICK_S:
            time.sleep(wait)
            producer.poll(0)  # delivery reports, so that the queue does not fill
        producer.produce(topic, raw)  # CreateTime: now, before any batching
    producer.flush()


def latency(settings: Settings, bootstrap: str, dataset: str, rate: float, seconds: float,
            warmup: float, workdir: Path, by_hand: bool = False) -> dict[str, Any]:
    """Event-to-prediction latency at an offered load: from the event's producer timestamp to
    the prediction's arrival in Kafka (its topic stamps LogAppendTime), matched by id, for
    the events offered after ``warmup`` seconds (the first fetches and sends of fresh clients).
    The predictions come from the learner, or ``by_hand`` from the hand-rolled loop (H) with
    the same model. Both topics are read once the run is over, so reading costs the loop no CPU."""
    topic = f"bench.latency.{time.time_ns()}"
    create_topics(bootstrap, [topic])
    create_topics(bootstrap, [topic + ".out"], configs={"message.timestamp.type": "LogAppendTime"})
    s = Settings(**{**vars(settings), "events_topic": topic, "model": topic,
                    "predictions_topic": topic + ".out"})
    count = max(1, int(rate * (warmup + seconds)))
    with contextlib.ExitStack() as running:
        if by_hand:
            pid = running.enter_context(HandRolled(bootstrap, topic, s.predictions_topic,
                                                   s.model_spec)).pid
        else:
            log = workdir / "latency-learner.log"
            earlier = log.stat().st_size if log.exists() else 0  # the log of the run before
            learner = spawn("learn", service_env(s), stdout=log, append=True)
            running.callback(stop, learner)
            _wait_for_log(log, "assigned", 60, after=earlier)
            pid = learner.pid
        with MachineProbe(workdir / "probe-latency.json") as probe:
            generator = multiprocessing.get_context("spawn").Process(
                target=offer, args=(bootstrap, topic, dataset, rate, count))
            cpu_from, wall_from = cpu_seconds(pid), time.monotonic()
            generator.start()
            generator.join()
            _, _, predictions = output_span(bootstrap, s.predictions_topic, count, timeout=120)
            cpu_share = (cpu_seconds(pid) - cpu_from) / (time.monotonic() - wall_from)
    _, _, events = output_span(bootstrap, topic, count, timeout=10)
    if any(r.timestamp_type != 1 for r in predictions):
        raise SystemExit(f"bench: {s.predictions_topic} is not stamped with LogAppendTime")
    events.sort(key=lambda r: r.offset)  # one partition: the order they were offered in
    sent = {json.loads(r.value)["id"]: r.timestamp for r in events[int(rate * warmup):]}
    arrived = {json.loads(r.value)["id"]: r.timestamp for r in predictions}
    delays = sorted((arrived[i] - t) / 1000 for i, t in sent.items())
    measured_from, measured_to = min(sent.values()) / 1000, max(arrived.values()) / 1000
    stalls = probe.stalls(measured_from, measured_to)
    return {"loop": "hand-rolled" if by_hand else "service", "offered_eps": round(rate),
            "kafka_client": "librdkafka" if by_hand else settings.kafka_client,
            "busy_poll_ms": 0.0 if by_hand else settings.busy_poll_ms,
            "warmup_s": warmup, "samples": len(delays),
            "p50_ms": round(1000 * statistics.median(delays), 2),
            "p99_ms": round(1000 * _quantile(delays, 0.99), 2),
            "max_ms": round(1000 * delays[-1], 2),
            "machine_stalls": {"over_ms": STALL_MS, "count": len(stalls),
                               "max_ms": max(stalls, default=0.0)},
            "machine_step_us": probe.step_us(measured_from, measured_to),
            "cpu_share": round(cpu_share, 3)}


def cpu_seconds(pid: int) -> float:
    """The user and system CPU time of a running process so far, all its threads (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class MachineProbe:
    """The machine itself, watched from a process of its own while a phase runs (~1 % of a
    core): stalls (wakeups from 2 ms sleeps later than ``STALL_MS``: nothing of ours could
    run either, on a shared virtual machine a neighbour's) and speed (the CPU time of a fixed
    piece of River work, per step). Read once the ``with`` block is over."""

    def __init__(self, out: Path) -> None:
        self.out = out
        context = multiprocessing.get_context("spawn")
        self._ready, self._done = context.Event(), context.Event()
        self._proc = context.Process(target=machine_probe, args=(self._ready, self._done, out))
        self._samples: dict[str, list[list[float]]] = {}

    def __enter__(self) -> MachineProbe:
        start_and_wait(self._proc, self._ready, "the machine probe did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._proc.join()
        if self.out.exists():
            self._samples = json.loads(self.out.read_text())
        elif exc[0] is None:
            raise SystemExit(f"bench: the machine probe ended without writing {self.out}")

    def stalls(self, start: float, end: float) -> list[float]:
        """How late each stall between ``start`` and ``end`` (epoch seconds) was, in ms."""
        return [ms for t, ms in self._samples["stalls"] if start <= t <= end]

    def step_us(self, start: float, end: float) -> float:
        """The median CPU time of one step of the probe's work between ``start`` and ``end``
        (give or take the time between two samples, so that a short phase has one)."""
        steps = [us for t, us in self._samples["speed"]
                 if start - SPEED_EVERY_S <= t <= end + SPEED_EVERY_S]
        return round(statistics.median(steps), 1) if steps else 0.0


def machine_probe(ready: Any, done: Any, out: Path) -> None:
    from river import datasets

    from stream_learner.models import build_model

    model = build_model(SPEED_MODEL)
    rows = list(itertools.islice(datasets.Phishing(), SPEED_EVENTS))
    stalls, speed = [], []
    ready.set()
    next_work = time.time()
    while not done.is_set():
        before = time.time()
        time.sleep(STALL_PROBE_S)
        behind = time.time() - before - STALL_PROBE_S
        if behind > STALL_MS / 1000:
            stalls.append((before, round(1000 * behind, 1)))
        if before >= next_work:
            next_work = before + SPEED_EVERY_S
            cpu = time.thread_time()
            for x, y in rows:
                model.predict_one(x)
                model.learn_one(x, y)
            speed.append((before, round((time.thread_time() - cpu) / len(rows) * 1e6, 2)))
    out.write_text(json.dumps({"stalls": stalls, "speed": speed}))


def _wait_for_log(path: Path, text: str, timeout: float, after: int = 0) -> float:
    """When ``text`` shows in ``path`` past its first ``after`` bytes (what earlier runs wrote)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_bytes()[after:].decode(errors="replace"):
            return time.time()
        time.sleep(0.02)
    tail = "\n".join(path.read_text(errors="replace").splitlines()[-15:]) if path.exists() else ""
    raise SystemExit(f"bench: {text!r} not in {path} after {timeout} s; log tail:\n{tail}")


def _log_time(path: Path, text: str, after: float) -> float | None:
    for line in path.read_text(errors="replace").splitlines():
        match = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})", line)
        if match and text in line:
            clock = time.strptime(match.group(1), "%Y-%m-%d %H:%M:%S")
            stamp = time.mktime(clock) + int(match.group(2)) / 1000
            if stamp >= after - 0.001:
                return stamp
    return None


def recovery(settings: Settings, bootstrap: str, dataset: str, workdir: Path) -> dict[str, Any]:
    """SIGKILL a learner on a live stream, restart it: time to the first new prediction."""
    topic = f"bench.recovery.{time.time_ns()}"
    create_topics(bootstrap, [topic, topic + ".out"])
    s = Settings(**{**vars(settings), "events_topic": topic, "model": topic,
                    "predictions_topic": topic + ".out", "checkpoint_every": 1000})
    rows = bench_events(dataset, 20_000)
    halt = threading.Event()

    def feed() -> None:
        producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
        for raw in rows:
            if halt.is_set():
                break
            producer.send(topic, raw)
            time.sleep(0.0005)
        producer.close()

    feeder = threading.Thread(target=feed)
    feeder.start()
    log = workdir / "recovery-learner.log"
    earlier = log.stat().st_size if log.exists() else 0  # the log of the run before
    first = spawn("learn", service_env(s), stdout=log, append=True)
    _wait_for_log(log, "checkpoint v2", 120, after=earlier)
    first.kill()
    first.wait()
    consumer = tail(bootstrap, s.predictions_topic)
    restarted_at = time.time()
    second = spawn("learn", service_env(s), stdout=log, append=True)
    first_new = None
    deadline = time.monotonic() + 60
    while first_new is None and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=50).values():
            fresh = [r.timestamp / 1000 for r in batch if r.timestamp / 1000 >= restarted_at]
            if fresh:
                first_new = min(fresh)
    halt.set()
    feeder.join()
    consumer.close()
    stop(second)
    lease = _log_time(log, "took the writer lease", restarted_at)
    subscribed = _log_time(log, "model " + s.model + ": resumed", restarted_at)
    assigned = _log_time(log, "assigned", restarted_at)
    if first_new is None or lease is None or assigned is None or subscribed is None:
        raise SystemExit(f"bench: recovery not observed; see {log}")
    return {"total_s": round(first_new - restarted_at, 3),
            "process_start_to_lease_s": round(lease - restarted_at, 3),
            "restore_s": round(subscribed - lease, 3),
            "broker_rejoin_s": round(assigned - subscribed, 3),
            "assignment_to_first_prediction_s": round(first_new - assigned, 3)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=CHECKPOINT_MODELS["logreg"], help="River spec of the model")
    parser.add_argument("--dataset", default="Phishing", help="bundled River dataset")
    parser.add_argument("--events", type=int, default=200_000, help="events, the dataset repeated")
    parser.add_argument("--checkpoint-events", type=int, default=10_000,
                        help="events per model in the checkpoint-cost runs (a checkpoint every twentieth)")
    parser.add_argument("--latency-seconds", type=float, default=10.0, help="measured, after the warm-up")
    parser.add_argument("--latency-warmup", type=float, default=3.0, help="seconds not measured")
    parser.add_argument("--busy-poll-ms", type=float, default=5.0,
                        help="the learner's --busy-poll-ms in the second latency run")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results.json")
    bench_http.add_options(parser)
    bench_keys.add_options(parser)
    return parser.parse_args(argv)


@dataclass(frozen=True)
class Run:
    """What the phases of one run share: its options, its events, the broker, the settings every
    service starts from, and a directory for logs."""

    args: argparse.Namespace
    events: list[bytes]
    bootstrap: str
    base: Settings
    work: Path


@contextlib.contextmanager
def bench_run(args: argparse.Namespace) -> Iterator[Run]:
    """The events, then a broker and a Redis of the run's own in a temporary directory, stopped
    when the block ends, however it ends."""
    events = bench_events(args.dataset, args.events)
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        work = Path(tmp)
        broker, redis = KafkaBroker(work / "kafka"), RedisServer(work / "redis")
        broker.start()
        redis.start()
        try:
            base = Settings(bootstrap_servers=broker.bootstrap, redis_url=redis.url, hmac_key="bench",
                            model_spec=args.model, key_prefix="bench", checkpoint_every=10_000,
                            checkpoint_interval=3600.0, kafka_client="librdkafka")
            print(f"bench: {args.events} {args.dataset} events, model {args.model}", flush=True)
            yield Run(args, events, broker.bootstrap, base, work)
        finally:
            broker.stop()
            redis.stop()


def additive_bound(r_eps: float, k_eps: float) -> float:
    """The throughput of R and K one after the other on every event: what S would reach if the
    service added nothing to a model and a Kafka loop."""
    return 1 / (1 / r_eps + 1 / k_eps)


def measure_raw_river(run: Run) -> float:
    r_eps = raw_river(run.events, run.args.model)
    print(f"  R raw River loop          {r_eps:10.0f} events/s", flush=True)
    return r_eps


def fill_topics(run: Run) -> None:
    """The events, in bench.events (one partition) for K, H and S."""
    create_topics(run.bootstrap, ["bench.events", "bench.bare.out", "bench.hand.out"])
    produce(run.bootstrap, "bench.events", run.events)


def measure_bare_kafka(run: Run) -> float:
    k_eps = bare_kafka(run.bootstrap, "bench.events", "bench.bare.out", run.args.events)
    print(f"  K bare kafka-python loop  {k_eps:10.0f} events/s", flush=True)
    return k_eps


def measure_hand_rolled(run: Run) -> float:
    n = run.args.events
    with HandRolled(run.bootstrap, "bench.events", "bench.hand.out", run.args.model):
        first, last, _ = output_span(run.bootstrap, "bench.hand.out", n)
    h_eps = events_per_second(first, last, n)
    print(f"  H hand-rolled loop        {h_eps:10.0f} events/s (the service's clients, "
          "the same model)", flush=True)
    return h_eps


def measure_service(run: Run, base: Settings, r_eps: float, k_eps: float, h_eps: float
                    ) -> tuple[float, float]:
    """S on the Kafka client of ``base``, and the machine's speed while it ran (a probe's River
    step, in us)."""
    n, client = run.args.events, base.kafka_client
    learn = Settings(**{**vars(base), "events_topic": "bench.events", "model": f"bench-{client}",
                        "predictions_topic": f"bench.learn.{client}.out"})
    with MachineProbe(run.work / "probe-s.json") as s_probe:
        learner = spawn("learn", service_env(learn), stdout=run.work / "learner.log", append=True)
        first, last, _ = output_span(run.bootstrap, learn.predictions_topic, n)
    stop(learner)
    s_eps = events_per_second(first, last, n)
    bound = additive_bound(r_eps, k_eps)
    print(f"  S service learner, {client:12s} {s_eps:10.0f} events/s = {s_eps / bound:.2f} of the "
          f"additive bound {bound:.0f}; {s_eps / h_eps:.2f} of H", flush=True)
    return s_eps, s_probe.step_us(first, last)


def measure_raw_predict(run: Run, base: Settings, frozen_eps: float) -> float:
    """P with the model S wrote on the Kafka client of ``base``; beside it, the frozen x1."""
    model = stored_state(replace(base, model=f"bench-{base.kafka_client}")).model
    p_eps = raw_predict(run.events, model)
    print(f"  P raw River predictions   {p_eps:10.0f} events/s; frozen x1 {frozen_eps / p_eps:.2f} of it",
          flush=True)
    return p_eps


def measure_frozen(run: Run, base: Settings) -> dict[int, float]:
    """The frozen predictor's throughput on the Kafka client of ``base``, with 1 and 2
    processes in one group, by replicas; they serve the model S learned on that client. The
    events go to a 2-partition topic of each phase once its group has settled, each
    predictor on its share: at a few seconds' worth of events, a group still joining would
    leave them all to the first predictor."""
    n, client = run.args.events, base.kafka_client
    frozen = {}
    for replicas in (1, 2):
        topic = f"bench.live{replicas}.{client}"
        create_topics(run.bootstrap, [topic], partitions=2)
        serve = Settings(**{**vars(base), "events_topic": topic, "model": f"bench-{client}",
                            "predictions_topic": f"bench.frozen{replicas}.{client}.out",
                            "group_id": f"bench-frozen-{replicas}-{client}"})
        logs = [run.work / f"frozen{replicas}-{client}-{i}.log" for i in range(replicas)]
        procs = [spawn("serve", service_env(serve), stdout=log) for log in logs]
        deadline = time.monotonic() + 60
        while [_assigned(log) for log in logs] != [2 // replicas] * replicas:
            if time.monotonic() > deadline:
                raise SystemExit(f"bench: the frozen x{replicas} group did not settle: {logs}")
            time.sleep(0.05)
        produce_fast(run.bootstrap, topic, run.events)
        first, last, _ = output_span(run.bootstrap, serve.predictions_topic, n)
        for proc in procs:
            stop(proc)
        frozen[replicas] = events_per_second(first, last, n)
        print(f"  frozen predictor x{replicas}, {client:12s} {frozen[replicas]:10.0f} events/s", flush=True)
    return frozen


def _assigned(log: Path) -> int:
    """The partitions of a service's latest assignment, as its log names them."""
    lines = [line for line in log.read_text(errors="replace").splitlines() if " assigned [" in line]
    return lines[-1].count("(") if lines else -1


def produce_fast(bootstrap: str, topic: str, events: list[bytes]) -> None:
    """The events to ``topic`` with librdkafka's producer: several times faster than the
    predictors read them, so that they are what is measured."""
    producer = make_producer(Settings(bootstrap_servers=bootstrap), "bench-load")
    for i, raw in enumerate(events):
        while True:
            try:
                producer.produce(topic, raw, str(i).encode())
                break
            except BufferError:
                producer.poll(0.01)
    if producer.flush(60):
        raise SystemExit(f"bench: events to {topic} still unsent after 60 s")


def measure_latency(run: Run, s_eps: float, h_eps: float, s_step_us: float, kp_eps: float
                    ) -> list[dict[str, Any]]:
    """The service with its defaults and busy-polling, then H at the same load and at half of
    its own throughput: the target met by hand on this machine, or not; last, the service on
    kafka-python at half of its own S."""
    args, base = run.args, run.base
    busy = Settings(**{**vars(base), "busy_poll_ms": args.busy_poll_ms})
    kp = Settings(**{**vars(base), "kafka_client": "kafka-python"})
    lats = [latency(settings, run.bootstrap, args.dataset, rate, args.latency_seconds,
                    args.latency_warmup, run.work, by_hand)
            for settings, rate, by_hand in ((base, s_eps / 2, False), (busy, s_eps / 2, False),
                                            (base, s_eps / 2, True), (base, h_eps / 2, True),
                                            (kp, kp_eps / 2, False))]
    for lat in lats:
        stalls = lat["machine_stalls"]
        print(f"  latency, {lat['loop']:11s} on {lat['kafka_client']:12s} at {lat['offered_eps']}/s, "
              f"busy poll {lat['busy_poll_ms']} ms: "
              f"p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms, max {lat['max_ms']} ms; "
              f"{100 * lat['cpu_share']:.0f} % of a core; "
              f"{stalls['count']} machine stalls over {STALL_MS} ms, the longest "
              f"{stalls['max_ms']} ms", flush=True)
    print(f"  machine speed             a probe's River step took "
          f"{' and '.join(str(lat['machine_step_us']) for lat in lats)} us during the latency "
          f"runs, {s_step_us} us during S", flush=True)
    return lats


def measure_checkpoints(run: Run) -> list[dict[str, Any]]:
    costs = []
    ckpt_dataset = checkpoint_dataset(run.args.dataset)
    for name, spec in CHECKPOINT_MODELS.items():
        count = run.args.checkpoint_events
        cost = checkpoint_cost(run.base, run.bootstrap, ckpt_dataset, spec, count, max(1, count // 20),
                               run.work)
        costs.append({"name": name, **cost})
        print(f"  checkpoint {name:15s} {cost['bytes']:10d} bytes, loop blocked p50 "
              f"{cost['blocked_ms_p50']} ms, p99 {cost['blocked_ms_p99']} ms "
              f"(pickling alone: {cost['pickle_ms']} ms)", flush=True)
    return costs


def measure_recovery(run: Run, base: Settings) -> dict[str, Any]:
    rec = recovery(base, run.bootstrap, run.args.dataset, run.work)
    print(f"  recovery after SIGKILL, {base.kafka_client:12s} {rec['total_s']} s ({rec})", flush=True)
    return rec


@dataclass(frozen=True)
class ClientFigures:
    """What one Kafka client gives the service: S, the frozen predictor x1 and x2, recovery."""

    s_eps: float
    s_step_us: float
    frozen: dict[int, float]
    recovery: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {"service_eps": round(self.s_eps), "frozen_1_eps": round(self.frozen[1]),
                "frozen_2_eps": round(self.frozen[2]), "machine_step_us_during_s": self.s_step_us,
                "recovery": self.recovery}


def report(args: argparse.Namespace, argv: list[str] | None, *, r_eps: float, k_eps: float,
           h_eps: float, rd: ClientFigures, kp: ClientFigures, lats: list[dict[str, Any]],
           costs: list[dict[str, Any]]) -> dict[str, Any]:
    """Every figure of the run, and the machine and command it came from: what --out holds.
    The top-level service figures are librdkafka's; ``kafka_python`` holds kafka-python's."""
    import river

    bound = additive_bound(r_eps, k_eps)
    return {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "river": river.__version__,
                    "kafka": KAFKA_VERSION},
        "command": " ".join(["python", "-m", "bench.run", *(argv or sys.argv[1:])]),
        "dataset": args.dataset, "model": args.model, "events": args.events,
        "raw_river_eps": round(r_eps), "bare_kafka_eps": round(k_eps), **rd.as_json(),
        "additive_bound_eps": round(bound), "service_vs_bound": round(rd.s_eps / bound, 3),
        "hand_rolled_eps": round(h_eps), "service_vs_hand_rolled": round(rd.s_eps / h_eps, 3),
        "kafka_python": {**kp.as_json(), "latency": lats[4],
                         "service_vs_librdkafka": round(kp.s_eps / rd.s_eps, 3)},
        "latency": lats[0], "latency_busy_poll": lats[1], "latency_hand_rolled": lats[2],
        "latency_hand_rolled_half": lats[3], "checkpoints": costs,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.model_scope == "key":
        return main_keys(args, argv)
    with bench_run(args) as run:
        r_eps = measure_raw_river(run)
        fill_topics(run)
        k_eps = measure_bare_kafka(run)
        h_eps = measure_hand_rolled(run)
        kp_base = Settings(**{**vars(run.base), "kafka_client": "kafka-python"})
        figures = {}
        for base in (run.base, kp_base):
            s_eps, s_step_us = measure_service(run, base, r_eps, k_eps, h_eps)
            figures[base.kafka_client] = (s_eps, s_step_us, measure_frozen(run, base))
        rd_s, rd_step, rd_frozen = figures["librdkafka"]
        p_eps = measure_raw_predict(run, run.base, rd_frozen[1])
        http_figures = bench_http.measure(run)
        lats = measure_latency(run, rd_s, h_eps, rd_step, figures["kafka-python"][0])
        costs = measure_checkpoints(run)
        rd = ClientFigures(*figures["librdkafka"], measure_recovery(run, run.base))
        kp = ClientFigures(*figures["kafka-python"], measure_recovery(run, kp_base))
    results = report(args, argv, r_eps=r_eps, k_eps=k_eps, h_eps=h_eps, rd=rd, kp=kp, lats=lats,
                     costs=costs)
    results.update(raw_predict_eps=round(p_eps), frozen_vs_raw_predict=round(rd.frozen[1] / p_eps, 3),
                   http=http_figures)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"bench: wrote {args.out}")
    return 0


def main_keys(args: argparse.Namespace, argv: list[str] | None) -> int:
    """``--model-scope key``: key scope's figures alone (bench/keys.py)."""
    with bench_run(args) as run:
        figures = bench_keys.measure(run)
    results = {"command": " ".join(["python", "-m", "bench.run", *(argv or sys.argv[1:])]),
               "cpus": os.cpu_count(), "dataset": args.dataset, "model": args.model, "key_scope": figures}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"bench: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
