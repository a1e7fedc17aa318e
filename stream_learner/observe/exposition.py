"""The Prometheus metrics of one process (``GET /metrics``), read from its ``Board``.

Counters and gauges are collected from the board's snapshot when Prometheus scrapes, so the
loop pays nothing per event for them; the histograms are observed where the time is spent
(the loop's checkpoint pause, an HTTP prediction). ``METRICS`` lists every name exported, for
the dashboards that query them (docker-compose's Grafana).

>>> from stream_learner.observe.board import Board
>>> board = Board("fraud", "learn")
>>> board.batch(events=3, predicted=3, learned=2, dead_letters={"bad_json": 1}, version=7)
>>> text = Exposition(board).render().decode()
>>> 'stream_learner_model_version{mode="learn",model="fraud"} 7.0' in text
True
>>> 'stream_learner_events_total{mode="learn",model="fraud",outcome="learned"} 2.0' in text
True
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from stream_learner.observe.board import PAUSE_BUCKETS, Board, Snapshot

PREFIX = "stream_learner_"
# No *_created series: they double what is scraped, and no dashboard needs them.
disable_created_metrics()  # type: ignore[no-untyped-call]
HTTP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

# Every metric this service exports, as a query names it (a histogram's series add _bucket,
# _sum and _count; a counter's name ends in _total).
METRICS = (
    "stream_learner_events_total",
    "stream_learner_dead_letters_total",
    "stream_learner_model_version",
    "stream_learner_prequential",
    "stream_learner_consumer_lag",
    "stream_learner_checkpoint_seconds",
    "stream_learner_checkpoint_bytes",
    "stream_learner_last_checkpoint_timestamp_seconds",
    "stream_learner_pending_labels",
    "stream_learner_lease_holder",
    "stream_learner_drift_total",
    "stream_learner_challenger_prequential",
    "stream_learner_events_per_second",
    "stream_learner_ready",
    "stream_learner_reloads_total",
    "stream_learner_http_predict_seconds",
    "stream_learner_http_predict_events_total",
    "stream_learner_key_models",
    "stream_learner_key_events_total",
    "stream_learner_key_cache_hit_ratio",
    "stream_learner_partition_version",
    "stream_learner_partition_prequential",
    "stream_learner_key_prequential",
    "stream_learner_partition_checkpoint_bytes",
    "stream_learner_partition_last_checkpoint_timestamp_seconds",
)
# Key scope's figures of key models: the counts that only grow, and the gauges.
KEY_EVENTS = ("created", "expired", "evicted", "hits", "misses")
KEY_GAUGES = ("cached", "dirty")


class _BoardCollector(Collector):
    def __init__(self, board: Board) -> None:
        self.board = board

    def collect(self) -> Iterator[Metric]:
        snap = self.board.snapshot()
        base = {"model": snap.model, "mode": snap.mode}
        events = CounterMetricFamily(PREFIX + "events", "Events handled by this process, by outcome.",
                                     labels=[*base, "outcome"])
        for outcome, n in sorted(snap.outcomes.items()):
            events.add_metric([*base.values(), outcome], n)
        yield events
        letters = CounterMetricFamily(PREFIX + "dead_letters", "Events dead-lettered, by reason.",
                                      labels=[*base, "reason"])
        for reason, n in sorted(snap.dead_letters.items()):
            letters.add_metric([*base.values(), reason], n)
        yield letters
        yield _gauge("model_version", "The model version learned or served.", base, snap.version)
        yield _gauge("events_per_second", "Events handled per second, over the last second or so.",
                     base, snap.events_per_s)
        yield _gauge("ready", "1 while ready (/readyz answers 200).", base, int(snap.ready))
        yield from self._stream(snap, base)
        yield from self._model(snap)
        if snap.keys or snap.partitions:
            yield from self._keys(snap, base)

    def _keys(self, snap: Snapshot, base: dict[str, str]) -> Iterator[Metric]:
        """Key scope: key models, the cache's hits, and each partition's version and metrics."""
        held = GaugeMetricFamily(PREFIX + "key_models", "Key models in memory: cached, and dirty (changed "
                                 "since their partition's checkpoint).", labels=[*base, "state"])
        counted = CounterMetricFamily(PREFIX + "key_events", "Key models created, expired (idle past "
                                      "--key-ttl), evicted from the cache, and the cache's hits and misses.",
                                      labels=[*base, "event"])
        for name in KEY_GAUGES:
            held.add_metric([*base.values(), name], snap.keys.get(name, 0))
        for name in KEY_EVENTS:
            counted.add_metric([*base.values(), name], snap.keys.get(name, 0))
        yield held
        yield counted
        asked = snap.keys.get("hits", 0) + snap.keys.get("misses", 0)
        yield _gauge("key_cache_hit_ratio", "Key model lookups the cache answered.", base,
                     snap.keys.get("hits", 0) / asked if asked else 0.0)
        versions = GaugeMetricFamily(PREFIX + "partition_version", "Each partition's checkpoint version, "
                                     "learned or served.", labels=[*base, "partition"])
        prequential = GaugeMetricFamily(PREFIX + "partition_prequential", "Each owned partition's "
                                        "prequential metrics over its keys, as its checkpoint records them.",
                                        labels=["model", "partition", "metric", "window"])
        saved = GaugeMetricFamily(PREFIX + "partition_checkpoint_bytes", "Each owned partition's last "
                                  "checkpoint: its record and the key models it wrote.",
                                  labels=["model", "partition"])
        saved_at = GaugeMetricFamily(PREFIX + "partition_last_checkpoint_timestamp_seconds", "When each "
                                     "owned partition's last checkpoint was written (Unix time).",
                                     labels=["model", "partition"])
        for partition, figures in sorted(snap.partitions.items()):
            versions.add_metric([*base.values(), str(partition)], figures["version"])
            if figures.get("checkpoint_at"):
                saved.add_metric([snap.model, str(partition)], figures["checkpoint_bytes"])
                saved_at.add_metric([snap.model, str(partition)], figures["checkpoint_at"])
            for name, value in sorted(figures.get("metrics", {}).items()):
                if value is not None:
                    metric, _, window = name.partition("@")
                    prequential.add_metric([snap.model, str(partition), metric, window or "all"], value)
        yield versions
        yield prequential
        yield saved
        yield saved_at
        own = GaugeMetricFamily(PREFIX + "key_prequential", "The prequential metrics of each key named "
                                "by --key-metric, over its own events.",
                                labels=["model", "key", "metric", "window"])
        for key, figures in sorted(snap.key_metrics.items()):
            for name, value in sorted(figures.items()):
                if value is not None:
                    metric, _, window = name.partition("@")
                    own.add_metric([snap.model, key, metric, window or "all"], value)
        yield own

    def _stream(self, snap: Snapshot, base: dict[str, str]) -> Iterator[Metric]:
        lag = GaugeMetricFamily(PREFIX + "consumer_lag", "Records not read yet: the end offset minus "
                                "the position, per assigned partition.", labels=[*base, "topic", "partition"])
        for (topic, partition), n in sorted(snap.lags.items()):
            lag.add_metric([*base.values(), topic, str(partition)], n)
        yield lag
        if snap.mode == "frozen":
            reloads = CounterMetricFamily(PREFIX + "reloads", "Model versions hot-reloaded.", labels=[*base])
            reloads.add_metric(list(base.values()), snap.reloads)
            yield reloads

    def _model(self, snap: Snapshot) -> Iterator[Metric]:
        model = {"model": snap.model}
        if snap.mode != "learn":
            return
        prequential = GaugeMetricFamily(PREFIX + "prequential", "Prequential metrics, as the checkpoint "
                                        "records them: window 'all' is cumulative, a number is rolling.",
                                        labels=["model", "metric", "window"])
        for name, value in sorted(snap.metrics.items()):
            if value is not None:
                metric, _, window = name.partition("@")
                prequential.add_metric([snap.model, metric, window or "all"], value)
        yield prequential
        theirs = GaugeMetricFamily(PREFIX + "challenger_prequential", "Each challenger's prequential "
                                   "metrics, as the checkpoint records them.",
                                   labels=["model", "challenger", "metric", "window"])
        for challenger, figures in sorted(snap.challengers.items()):
            for name, value in sorted(figures["metrics"].items()):
                if value is not None:
                    metric, _, window = name.partition("@")
                    theirs.add_metric([snap.model, challenger, metric, window or "all"], value)
        yield theirs
        if snap.last_checkpoint_at is not None:
            yield _gauge("last_checkpoint_timestamp_seconds", "When the last checkpoint was written "
                         "(Unix time).", model, snap.last_checkpoint_at)
        if snap.last_checkpoint_bytes is not None:
            yield _gauge("checkpoint_bytes", "The last checkpoint's model bytes.", model,
                         snap.last_checkpoint_bytes)
        if snap.pending_labels is not None:
            yield _gauge("pending_labels", "Events waiting for a late label.", model, snap.pending_labels)
        cumulative, buckets = 0, []
        for le, n in zip((*PAUSE_BUCKETS, float("inf")), snap.pauses, strict=True):
            cumulative += n
            buckets.append((str(le) if le != float("inf") else "+Inf", cumulative))
        pauses = HistogramMetricFamily(PREFIX + "checkpoint_seconds", "How long each checkpoint held up "
                                       "the learning loop.", labels=["model"])
        pauses.add_metric([snap.model], buckets, snap.pauses_sum)
        yield pauses
        yield _gauge("lease_holder", "1 while this learner holds the model's writer lease.", model,
                     int(bool(snap.lease_held)))
        drifts = CounterMetricFamily(PREFIX + "drift", "Drift alerts raised by this process.",
                                     labels=["model"])
        drifts.add_metric([snap.model], snap.drifts)
        yield drifts


def _gauge(name: str, doc: str, labels: dict[str, str], value: float) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(PREFIX + name, doc, labels=list(labels))
    gauge.add_metric(list(labels.values()), value)
    return gauge


class Exposition:
    """The process's registry: the board's figures, and HTTP predictions' own."""

    def __init__(self, board: Board) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_BoardCollector(board))
        labels = {"model": board.snapshot().model}
        self.predict_seconds = Histogram(
            PREFIX + "http_predict_seconds", "Time to answer a POST /predict.", ["model"],
            registry=self.registry, buckets=HTTP_BUCKETS).labels(**labels)
        self.predict_events = Counter(PREFIX + "http_predict_events", "Events predicted over HTTP.",
                                      ["model"], registry=self.registry).labels(**labels)

    def render(self) -> bytes:
        return generate_latest(self.registry)
