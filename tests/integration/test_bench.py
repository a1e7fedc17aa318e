"""The benchmark runs end to end on tiny sizes and reports every figure (not a speed test)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.run import main


def test_bench_smoke(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    assert main(["--events", "1500", "--checkpoint-events", "300", "--latency-seconds", "0.5",
                 "--latency-warmup", "0.25", "--out", str(out),
                 "--http-runs", "1", "--http-seconds", "0.3", "--http-client", "thread"]) == 0
    results = json.loads(out.read_text())
    for key in ("raw_river_eps", "bare_kafka_eps", "hand_rolled_eps", "service_eps",
                "additive_bound_eps", "frozen_1_eps", "frozen_2_eps", "raw_predict_eps"):
        assert results[key] > 0, key
    assert results["frozen_vs_raw_predict"] == pytest.approx(  # of the figures before rounding
        results["frozen_1_eps"] / results["raw_predict_eps"], abs=1e-3)
    assert 0 < results["service_vs_bound"] < 10 and 0 < results["service_vs_hand_rolled"] < 10
    assert results["additive_bound_eps"] < min(results["raw_river_eps"], results["bare_kafka_eps"])
    latencies = [results[k] for k in ("latency", "latency_busy_poll", "latency_hand_rolled",
                                      "latency_hand_rolled_half")]
    assert [(lat["loop"], lat["busy_poll_ms"] > 0) for lat in latencies] == [
        ("service", False), ("service", True), ("hand-rolled", False), ("hand-rolled", False)]
    half_s, half_h = results["service_eps"] / 2, results["hand_rolled_eps"] / 2
    for latency, half in zip(latencies, [half_s] * 3 + [half_h], strict=True):
        assert abs(latency["offered_eps"] - half) <= 1  # both figures are rounded
    for latency in latencies:
        assert latency["samples"] > 0 and 0 <= latency["p50_ms"] <= latency["p99_ms"] <= latency["max_ms"]
        stalls = latency["machine_stalls"]
        assert stalls["count"] >= 0 and (stalls["max_ms"] > stalls["over_ms"]) == (stalls["count"] > 0)
        assert 1 < latency["machine_step_us"] < 1000
        assert 0 < latency["cpu_share"] < 4  # of one core; its threads can use both
    assert 1 < results["machine_step_us_during_s"] < 1000
    names = [c["name"] for c in results["checkpoints"]]
    assert names == ["logreg", "hoeffding_tree", "arf10"]
    for cost in results["checkpoints"]:
        assert cost["dataset"] == "Phishing" and cost["bytes"] > 0 and cost["checkpoints"] >= 1
        assert 0 < cost["blocked_ms_p50"] <= cost["blocked_ms_p99"] and cost["pickle_ms"] > 0
    sizes = {c["name"]: c["bytes"] for c in results["checkpoints"]}
    assert sizes["logreg"] < sizes["arf10"]
    for recovery in (results["recovery"], results["kafka_python"]["recovery"]):
        assert 0 < recovery["total_s"] < 60
    kp = results["kafka_python"]
    for key in ("service_eps", "frozen_1_eps", "frozen_2_eps"):
        assert kp[key] > 0, key
    assert kp["service_vs_librdkafka"] == round(kp["service_eps"] / results["service_eps"], 3)
    assert [lat["kafka_client"] for lat in latencies] == ["librdkafka"] * 4
    kp_latency = kp["latency"]
    assert (kp_latency["loop"], kp_latency["kafka_client"]) == ("service", "kafka-python")
    assert abs(kp_latency["offered_eps"] - kp["service_eps"] / 2) <= 1
    assert kp_latency["samples"] > 0 and 0 <= kp_latency["p50_ms"] <= kp_latency["p99_ms"]
    assert results["machine"]["cpus"] and results["events"] == 1500
    check_http(results["http"], results["events"])


def check_http(http: dict[str, Any], events: int) -> None:
    """The HTTP figures (bench/http.py): S scraped and not, and POST /predict."""
    scraping = http["scraping"]
    assert scraping["events_per_run"] == events and scraping["runs_each"] == 1
    assert len(scraping["off_eps"]) == len(scraping["on_eps"]) == 1
    assert scraping["off_median_eps"] > 0 and scraping["on_median_eps"] > 0
    assert abs(scraping["on_vs_off"] - scraping["on_median_eps"] / scraping["off_median_eps"]) < 0.01
    assert scraping["scrapes"] >= 1 and scraping["scrape_failures"] == 0
    assert 0 < scraping["metrics_ms_p50"] < 1000 and 0 < scraping["status_ms_p50"] < 1000
    assert scraping["metrics_bytes"] > 1000
    assert scraping["status_bytes"] > 100
    predict = http["predict"]
    assert predict["client"] == "thread" and predict["seconds_per_phase"] == 0.3
    raw = predict["in_process"]
    for key in ("river_predict_eps", "engine_predict_eps", "handler_single_eps", "handler_batch_eps"):
        assert raw[key] > 0, key
    assert [(f["body"], f["clients"]) for f in predict["http"]] == [
        ("single", 1), ("batch100", 1), ("single", 8), ("batch100", 8)]
    for f in predict["http"]:
        assert f["requests"] > 0 and f["eps"] == round(f["requests"] * f["events_per_request"] / 0.3)
        assert 0 < f["p50_ms"] <= f["p99_ms"] < 10_000
        assert 0 < f["server_cpu_share"] < 4 and 0 < f["clients_cpu_share"] < 4
