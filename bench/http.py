"""The HTTP part of ``make bench`` (bench/run.py calls it): what the HTTP server costs the
learner, and what ``POST /predict`` on ``serve`` delivers.

  scraping  S (``stream-learner learn``, as bench.run measures it) with ``--http-port`` set
            and ``GET /metrics`` and ``GET /api/status?since=...`` (as the dashboard asks)
            every second from a thread of the bench, against S with no HTTP server: runs
            alternated off, on, off, on, ..., ``--http-events`` events each, the median of each;
  predict   ``stream-learner serve --http-port`` with the model S learned, its Kafka loop idle
            (an empty topic): ``POST /predict`` with one event and with batches of 100, from 1
            and 8 clients (processes, each with one persistent ``http.client`` connection),
            events/s and the latency of a request; beside it, on the same events in-process:
            River's bare ``predict_proba_one``, ``Engine(state, learn=False).predict`` on
            decoded events, and the route's handler (``HttpPredict``: decode, validate,
            predict, encode) on the same bodies, without HTTP.

Bench-only module: imported by bench.run, from which it takes its helpers when it runs.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import multiprocessing
import queue
import socket
import statistics
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from stream_learner.config import Settings
from tools.localstack import create_topics
from tools.service import service_env, spawn, stop

if TYPE_CHECKING:
    from bench.run import Run

SCRAPE_EVERY_S = 1.0
BATCH = 100  # events in a batch request
CLIENTS = (1, 8)
IN_PROCESS_EVENTS = 20_000  # events of each in-process loop, at most
SERVE_TOPIC = "bench.http.idle"  # no event ever: serve's Kafka loop stays idle


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--http-events", type=int, default=100_000,
                        help="events per run in the scraping runs (at most --events)")
    parser.add_argument("--http-runs", type=int, default=3,
                        help="scraping runs with the HTTP server off, and as many on, alternated")
    parser.add_argument("--http-seconds", type=float, default=3.0,
                        help="seconds measured per POST /predict phase, after a tenth as warm-up")
    parser.add_argument("--http-client", choices=("process", "thread"), default="process",
                        help="POST /predict clients: processes, or threads of the bench (one GIL)")


def measure(run: Run) -> dict[str, Any]:
    """Both parts; ``predict`` serves the model S learned on librdkafka (``bench-librdkafka``)."""
    return {"scraping": measure_scraping(run), "predict": measure_predict(run)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- scraping -------------------------------------------------------------------------------


class Scraper:
    """A thread of the bench that GETs /metrics and /api/status every second, as Prometheus
    and an open dashboard would, on one persistent connection; ``since`` is the last point's
    time, as the dashboard asks. Until the server first answers it tries every 0.1 s; failures
    after that are counted."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.done = threading.Event()
        self.answered = threading.Event()
        self.seconds: dict[str, list[float]] = {"metrics": [], "status": []}
        self.bytes: dict[str, int] = {"metrics": 0, "status": 0}
        self.failures = 0
        self._thread = threading.Thread(target=self._run, name="scraper", daemon=True)

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.answered.wait(10)  # a short run: at least one scrape
        self.done.set()
        self._thread.join()

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        since = 0.0
        while not self.done.wait(SCRAPE_EVERY_S if self.answered.is_set() else 0.1):
            try:
                self._get(conn, "metrics", "/metrics")
                body = self._get(conn, "status", f"/api/status?since={since}")
                points = json.loads(body)["points"]
                since = points[-1]["at"] if points else since
                self.answered.set()
            except (OSError, http.client.HTTPException):
                self.failures += self.answered.is_set()
                conn.close()

    def _get(self, conn: http.client.HTTPConnection, name: str, path: str) -> bytes:
        start = time.perf_counter()
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise http.client.HTTPException(f"GET {path}: {response.status}")
        self.seconds[name].append(time.perf_counter() - start)
        self.bytes[name] = len(body)
        return body


def scrape_run(run: Run, topic: str, count: int, index: int, http_on: bool) -> tuple[float, Scraper | None]:
    """One run of S over ``topic``'s ``count`` events, with a fresh model: its events/s, and
    the scraper when the HTTP server was on."""
    from bench.run import events_per_second, output_span

    port = free_port() if http_on else 0
    name = f"bench-http-{index}-{'on' if http_on else 'off'}"
    s = Settings(**{**vars(run.base), "events_topic": topic, "model": name, "group_id": name,
                    "predictions_topic": f"bench.http.{index}.out", "http_port": port})
    scraper = Scraper(port) if http_on else None
    learner = spawn("learn", service_env(s), stdout=run.work / "http-learner.log", append=True)
    try:
        if scraper is None:
            first, last, _ = output_span(run.bootstrap, s.predictions_topic, count)
        else:
            with scraper:
                first, last, _ = output_span(run.bootstrap, s.predictions_topic, count)
    finally:
        stop(learner)
    return events_per_second(first, last, count), scraper


def measure_scraping(run: Run) -> dict[str, Any]:
    """S with the HTTP server off and on, alternated, ``--http-runs`` of each; their medians."""
    from bench.run import produce

    count = min(run.args.http_events, run.args.events)
    topic = "bench.http.events"
    create_topics(run.bootstrap, [topic])
    produce(run.bootstrap, topic, run.events[:count])
    off: list[float] = []
    on: list[float] = []
    scrapers: list[Scraper] = []
    for i in range(2 * run.args.http_runs):
        eps, scraper = scrape_run(run, topic, count, i, http_on=i % 2 == 1)
        (on if scraper else off).append(eps)
        if scraper:
            scrapers.append(scraper)
    metrics_s = [t for sc in scrapers for t in sc.seconds["metrics"]]
    status_s = [t for sc in scrapers for t in sc.seconds["status"]]
    if not metrics_s or not status_s:
        raise SystemExit("bench: no successful scrape of the learner's HTTP server")
    ratio = statistics.median(on) / statistics.median(off)
    result = {
        "events_per_run": count, "runs_each": run.args.http_runs, "scrape_every_s": SCRAPE_EVERY_S,
        "off_eps": [round(e) for e in off], "on_eps": [round(e) for e in on],
        "off_median_eps": round(statistics.median(off)), "on_median_eps": round(statistics.median(on)),
        "on_vs_off": round(ratio, 3),
        "scrapes": len(metrics_s), "scrape_failures": sum(sc.failures for sc in scrapers),
        "metrics_ms_p50": _ms(statistics.median(metrics_s)),
        "status_ms_p50": _ms(statistics.median(status_s)),
        "metrics_bytes": scrapers[-1].bytes["metrics"], "status_bytes": scrapers[-1].bytes["status"],
    }
    print(f"  S with HTTP scraped / off {result['on_median_eps']:10d} / {result['off_median_eps']} "
          f"events/s = {ratio:.3f} (medians of {run.args.http_runs}, {count} events each; on "
          f"{result['on_eps']}, off {result['off_eps']}); GET /metrics {result['metrics_ms_p50']} ms, "
          f"/api/status {result['status_ms_p50']} ms at p50", flush=True)
    return result


# -- POST /predict --------------------------------------------------------------------------


def bodies(events: list[bytes], per_request: int) -> list[bytes]:
    """Request bodies of ``events`` in order: each event alone, or JSON arrays of ``per_request``."""
    if per_request == 1:
        return events
    return [b"[" + b",".join(events[i:i + per_request]) + b"]"
            for i in range(0, len(events) - per_request + 1, per_request)]


def client(port: int, phases: list[list[bytes]], seconds: float, warmup: float, barrier: Any,
           results: Any) -> None:
    """One client, in a process of its own: for each phase (after every client is ready), POST
    its bodies in turn on one persistent connection for ``warmup + seconds``; puts (requests,
    latencies in seconds, CPU seconds) of the measured part on ``results``, or its error."""
    try:
        post_all(port, phases, seconds, warmup, barrier, results)
    except Exception as exc:
        results.put((-1, [], f"{type(exc).__name__}: {exc}"))
        raise


def post_all(port: int, phases: list[list[bytes]], seconds: float, warmup: float, barrier: Any,
             results: Any) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json"}
    for phase in phases:
        barrier.wait()
        start = time.perf_counter()
        measured_from, end = start + warmup, start + warmup + seconds
        latencies = []
        cpu_from = None
        for body in itertools.cycle(phase):
            before = time.perf_counter()
            if before >= end:
                break
            if cpu_from is None and before >= measured_from:
                cpu_from = time.thread_time()
            conn.request("POST", "/predict", body, headers)
            response = conn.getresponse()
            answer = response.read()
            if response.status != 200:
                raise RuntimeError(f"bench: POST /predict answered {response.status}: {answer[:200]!r}")
            if before >= measured_from:
                latencies.append(time.perf_counter() - before)
        results.put((len(latencies), latencies, time.thread_time() - (cpu_from or time.thread_time())))
    conn.close()


def post_phases(port: int, pid: int, phases: list[tuple[str, list[bytes], int]], clients: int,
                seconds: float, mode: str) -> list[dict[str, Any]]:
    """``clients`` clients (processes, or threads of this one with ``mode`` "thread") through
    every phase (name, bodies, events per body): events/s, request latency, and the CPU share
    of the server and of the clients (of this whole process, with threads)."""
    from bench.run import cpu_seconds

    barrier: Any
    results: Any
    procs: list[Any]
    args = (port, [b for _, b, _ in phases], seconds, seconds / 10)
    if mode == "thread":
        barrier, results = threading.Barrier(clients + 1), queue.Queue()
        procs = [threading.Thread(target=client, args=(*args, barrier, results)) for _ in range(clients)]
    else:
        context = multiprocessing.get_context("spawn")
        barrier, results = context.Barrier(clients + 1), context.Queue()
        procs = [context.Process(target=client, args=(*args, barrier, results)) for _ in range(clients)]
    warmup = seconds / 10
    for proc in procs:
        proc.start()
    figures = []
    for name, _, per_body in phases:
        barrier.wait(120)  # the clients have started (imports) or finished the phase before
        time.sleep(warmup)
        cpu_from, wall_from = cpu_seconds(pid), time.monotonic()
        parts = [results.get(timeout=seconds + 60) for _ in procs]
        for n, _, error in parts:
            if n < 0:
                raise SystemExit(f"bench: a POST /predict client failed: {error}")
        server_share = (cpu_seconds(pid) - cpu_from) / (time.monotonic() - wall_from)
        requests = sum(n for n, _, _ in parts)
        latencies = sorted(t for _, lats, _ in parts for t in lats)
        if not latencies:
            raise SystemExit(f"bench: no POST /predict answered in {seconds} s")
        figures.append({
            "body": name, "clients": clients, "events_per_request": per_body, "requests": requests,
            "eps": round(requests * per_body / seconds), "requests_per_s": round(requests / seconds),
            "p50_ms": _ms(statistics.median(latencies)), "p99_ms": _ms(_quantile(latencies, 0.99)),
            "server_cpu_share": round(server_share, 3),
            "clients_cpu_share": round(sum(cpu for _, _, cpu in parts) / seconds, 3)})
    for proc in procs:
        proc.join()
    return figures


def in_process(run: Run, settings: Settings, singles: list[bytes], batches: list[bytes]
               ) -> dict[str, int]:
    """Events/s of the model the server serves, in this process on the same events: River's
    ``predict_proba_one`` (``predict_one``, a regressor), ``Engine.predict`` on decoded events,
    and ``HttpPredict`` on the request bodies (single and batch)."""
    from stream_learner.checkpoint import open_record
    from stream_learner.engine import Engine
    from stream_learner.events import Source, decode_event
    from stream_learner.models import infer_task
    from stream_learner.observe.predict import FrozenModel, HttpPredict
    from stream_learner.state.redis import RedisStore

    store = RedisStore.for_settings(settings)
    ckpt = open_record(store.load(settings.model), settings.signing_keys())
    store.close()
    state = ckpt.state
    engine = Engine(state, learn=False)
    fields, limits = settings.event_fields(), settings.event_limits()
    xs = [json.loads(raw)["x"] for raw in singles]
    model: Any = state.model
    predict = model.predict_one if infer_task(model) == "regression" else model.predict_proba_one
    decoded = [decode_event(raw, Source("bench", 0, i, 0), fields, state.task, limits)
               for i, raw in enumerate(singles)]
    frozen = FrozenModel(engine, ckpt.meta.version)
    handler = HttpPredict(settings.model, fields, limits, lambda: frozen)

    def rate(work: Callable[[Any], object], items: list[Any], per_item: int = 1) -> int:
        start = time.perf_counter()
        for item in items:
            work(item)
        return round(per_item * len(items) / (time.perf_counter() - start))

    def handle(body: bytes) -> None:
        status, answer = handler(body)
        if status != 200:
            raise SystemExit(f"bench: HttpPredict answered {status}: {answer[:200]!r}")

    return {"river_predict_eps": rate(predict, xs), "engine_predict_eps": rate(engine.predict, decoded),
            "handler_single_eps": rate(handle, singles),
            "handler_batch_eps": rate(handle, batches, BATCH)}


def measure_predict(run: Run) -> dict[str, Any]:
    """``serve --http-port`` on the model S learned, its Kafka loop idle, and ``POST /predict``
    at 1 and 8 clients, single events and batches; the same in-process, for comparison."""
    port = free_port()
    create_topics(run.bootstrap, [SERVE_TOPIC, SERVE_TOPIC + ".out"])
    s = Settings(**{**vars(run.base), "events_topic": SERVE_TOPIC, "model": f"bench-{run.base.kafka_client}",
                    "predictions_topic": SERVE_TOPIC + ".out", "group_id": "bench-http-serve",
                    "http_port": port})
    events = run.events[:min(len(run.events), IN_PROCESS_EVENTS)]
    singles, batches = bodies(events, 1), bodies(events, BATCH)
    if not batches:
        raise SystemExit(f"bench: fewer than {BATCH} events for POST /predict")
    raw = in_process(run, s, singles, batches)
    server = spawn("serve", service_env(s), stdout=run.work / "http-serve.log", append=True)
    try:
        wait_ready(port, 60)
        phases = [("single", singles, 1), (f"batch{BATCH}", batches, BATCH)]
        args = run.args
        figures = [f for n in CLIENTS
                   for f in post_phases(port, server.pid, phases, n, args.http_seconds, args.http_client)]
    finally:
        stop(server)
    print(f"  in-process, serve's model River predict_proba_one {raw['river_predict_eps']}, Engine.predict "
          f"{raw['engine_predict_eps']}, HttpPredict single {raw['handler_single_eps']}, batch of "
          f"{BATCH} {raw['handler_batch_eps']} events/s", flush=True)
    for f in figures:
        print(f"  POST /predict {f['body']:8s} x{f['clients']} clients {f['eps']:8d} events/s, "
              f"{f['requests_per_s']} requests/s, p50 {f['p50_ms']} ms, p99 {f['p99_ms']} ms; "
              f"server {100 * f['server_cpu_share']:.0f} %, clients {100 * f['clients_cpu_share']:.0f} % "
              "of a core", flush=True)
    return {"seconds_per_phase": run.args.http_seconds, "client": run.args.http_client, "in_process": raw,
            "http": figures}


def wait_ready(port: int, timeout: float) -> None:
    """Until GET /readyz answers 200: the model loaded, the (idle) partitions assigned."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return
        except (OSError, http.client.HTTPException):
            pass
        finally:
            conn.close()
        time.sleep(0.1)
    raise SystemExit(f"bench: serve's GET /readyz did not answer 200 in {timeout} s")


def _ms(seconds: float) -> float:
    return round(1000 * seconds, 3)


def _quantile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]

