"""docker-compose's Prometheus and Grafana: they scrape the ports the services listen on, and the
dashboard queries only metrics the service exports."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import yaml

from stream_learner.observe.exposition import METRICS
from tests.unit.test_compose import compose_config
from tools.localstack import ROOT

MONITORING = ROOT / "tools" / "monitoring"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "stream-learner.json"
PROMETHEUS = MONITORING / "prometheus.yml"
METRIC_NAME = re.compile(r"\bstream_learner_[A-Za-z0-9_:]*")
HISTOGRAM_SERIES = re.compile(r"_(bucket|sum|count)$")
# What the dashboard shows (issue 20): each of these is queried by some panel.
SHOWN = {"stream_learner_prequential", "stream_learner_events_total", "stream_learner_consumer_lag",
         "stream_learner_dead_letters_total", "stream_learner_model_version",
         "stream_learner_last_checkpoint_timestamp_seconds", "stream_learner_checkpoint_seconds",
         "stream_learner_http_predict_seconds", "stream_learner_lease_holder", "stream_learner_ready"}


def queries(node: Any) -> Iterator[str]:
    """Every PromQL query of a dashboard: the panels' exprs and the variables' queries."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "query", "definition") and isinstance(value, str):
                yield value
            else:
                yield from queries(value)
    elif isinstance(node, list):
        for item in node:
            yield from queries(item)


def metric_names(query: str) -> set[str]:
    """The stream_learner_* metrics a query reads: a histogram's series by the histogram's name."""
    names = set()
    for name in METRIC_NAME.findall(query):
        if name not in METRICS and not name.endswith("_total"):
            name = HISTOGRAM_SERIES.sub("", name)
        names.add(name)
    return names


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def compose() -> dict[str, Any]:
    result = compose_config(STREAM_LEARNER_HMAC_KEY="test-key")
    assert result.returncode == 0, result.stderr
    loaded: dict[str, Any] = yaml.safe_load(result.stdout)
    return loaded


def test_metric_names_reads_histogram_series_and_counters() -> None:
    query = ('histogram_quantile(0.99, sum by (le) (rate(stream_learner_checkpoint_seconds_bucket[1m])))'
             ' + rate(stream_learner_events_total{model=~"$model"}[5m])')
    assert metric_names(query) == {"stream_learner_checkpoint_seconds", "stream_learner_events_total"}
    assert metric_names("stream_learner_events") == {"stream_learner_events"}  # not exported: no _total


def test_the_dashboard_queries_only_exported_metrics() -> None:
    board = dashboard()
    panels = board["panels"]
    assert panels and all(p["targets"] and all(t["expr"].strip() for t in p["targets"]) for p in panels)
    found: dict[str, set[str]] = {}
    for query in queries(board):
        for name in metric_names(query):
            found.setdefault(name, set()).add(query)
    unknown = {name: sorted(qs) for name, qs in found.items() if name not in METRICS}
    assert not unknown, f"not in stream_learner.observe.exposition.METRICS: {unknown}"
    assert not SHOWN - set(found), f"no panel shows {SHOWN - set(found)}"


def test_grafana_reads_the_provisioned_prometheus_and_dashboards() -> None:
    provisioning = MONITORING / "grafana" / "provisioning"
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    uids = {t["datasource"]["uid"] for p in dashboard()["panels"] for t in [p, *p["targets"]]}
    assert uids == {source["uid"]}
    providers = yaml.safe_load((provisioning / "dashboards" / "stream-learner.yml").read_text())
    (provider,) = providers["providers"]
    grafana = compose()["services"]["grafana"]
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in grafana["volumes"]}
    assert mounts[provider["options"]["path"]] == str(DASHBOARD.parent)
    assert mounts["/etc/grafana/provisioning"] == str(provisioning)


def test_prometheus_scrapes_the_ports_the_services_listen_on_and_they_check_healthz() -> None:
    services = compose()["services"]
    prometheus = services["prometheus"]
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in prometheus["volumes"]}
    assert mounts["/etc/prometheus/prometheus.yml"] == str(PROMETHEUS)
    config = yaml.safe_load(PROMETHEUS.read_text())
    targets = {job["job_name"]: [t for static in job["static_configs"] for t in static["targets"]]
               for job in config["scrape_configs"]}
    ports = set()
    for name in ("learner", "predictor"):
        env = services[name]["environment"]
        port = int(env["STREAM_LEARNER_HTTP_PORT"])
        assert port and env["STREAM_LEARNER_HTTP_HOST"] == "0.0.0.0", f"{name}: Prometheus cannot reach it"
        assert targets[name] == [f"{name}:{port}"], name
        assert f"http://127.0.0.1:{port}/healthz" in " ".join(services[name]["healthcheck"]["test"]), name
        published = {str(p) for p in services[name]["ports"]}
        assert any(p.startswith(f"127.0.0.1:{port}:{port}") for p in published), f"{name}: {published}"
        ports.add(port)
    assert len(ports) == 2
    assert config["global"]["scrape_interval"] == "5s"
