"""The key-scope benchmark runs end to end on tiny sizes and reports every figure (not a speed test)."""

from __future__ import annotations

import json
from pathlib import Path

from bench.run import main


def test_bench_of_key_scope_smoke(tmp_path: Path) -> None:
    out = tmp_path / "keys.json"
    assert main(["--model-scope", "key", "--events", "1200", "--keys", "50", "--out", str(out)]) == 0
    figures = json.loads(out.read_text())["key_scope"]
    assert figures["partitions"] == 6 and figures["events"] == 1200
    assert figures["kafka_client"] == "librdkafka"  # the faster client: what the figures are of
    assert sorted(figures["learners_eps"]) == ["1", "2", "3"]
    assert all(eps > 0 for eps in figures["learners_eps"].values())
    cache = figures["cache"]
    assert 0 < cache["hit_us"] < cache["batch_miss_us"] < cache["miss_us"]
    assert [c["keys"] for c in figures["checkpoints"]] == [100, 1000]
    assert 0 < figures["checkpoints"][0]["ms"] < figures["checkpoints"][1]["ms"]
