"""The dashboard of a real learner (``stream-learner learn --http-port N`` on the real Kafka and
Redis) in a real browser: the page draws the learner's figures and shows the model version the
store holds last."""

from __future__ import annotations

import re
import signal
import subprocess
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.browser import chromium, page_errors, points, rows_of, save_screenshot, text_of, wait_until
from tests.integration.helpers import latest_meta, make_settings, phishing, produce, wait_for
from tests.integration.test_key_scope import covered, key_settings, partitions
from tools import service
from tools.events import event_bytes, keyed_event_bytes
from tools.localstack import KafkaBroker, RedisServer, free_port
from tools.service import service_env

SLOW = "preprocessing.StandardScaler() | linear_model.LogisticRegression(optimizer=optim.SGD(0.005))"


def test_the_dashboard_shows_a_real_learners_figures_and_the_stores_latest_version(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
    topic: Callable[..., str], tmp_path: Path,
) -> None:
    rows = phishing()
    rows = [(x, y if i < len(rows) // 2 else not y) for i, (x, y) in enumerate(rows)]  # a drift
    port = free_port()
    settings = make_settings(kafka, redis_server, unique, events_topic=topic("events", partitions=2),
                             http_port=port, challengers=(f"slow={SLOW}",), drift_detector="drift.ADWIN()")
    bad = [("bad-1", b'{"id": "bad-1", "x": {"a": NaN}}'), ("bad-2", b"not json")]
    produce(kafka.bootstrap, settings.events_topic, [*event_bytes(rows), *bad])
    log = tmp_path / "learner.log"
    learner = service.spawn("learn", service_env(settings), stdout=log)
    try:
        def serving() -> bool:
            assert learner.poll() is None, log.read_text()
            return f"HTTP on http://127.0.0.1:{port}/" in log.read_text()

        wait_for("the learner's HTTP server", serving)
        with chromium() as browser:
            browser.get(f"http://127.0.0.1:{port}/")

            # Until every event is learned, and the page shows the store's latest version then.
            def shows_the_latest_version(driver: WebDriver) -> bool:
                assert learner.poll() is None, log.read_text()
                meta = latest_meta(settings)
                return (meta is not None and meta.learned == len(rows) and points(driver, "metric-chart") > 0
                        and text_of(driver, "version") == str(meta.version))

            wait_until(browser, "the store's last version, all learned", shows_the_latest_version, 60)
            meta = latest_meta(settings)
            assert meta is not None
            assert text_of(browser, "model") == settings.model and text_of(browser, "mode") == "learn"

            # Caught up: every partition's lag is 0, and the dead letters are the checkpoint's.
            def caught_up(driver: WebDriver) -> bool:
                lags = rows_of(driver, "lag-table")
                letters = {r[0]: int(r[1]) for r in rows_of(driver, "letters-table")}
                final = latest_meta(settings)
                return (len(lags) == 2 and all(r[0] == settings.events_topic and r[2] == "0" for r in lags)
                        and final is not None and letters == final.dead_letters
                        and text_of(driver, "version") == str(final.version))

            wait_until(browser, "zero lag and the checkpoint's dead letters", caught_up, 60)

            # Champion and challenger side by side, as the checkpoint has them; the drift alerts
            # the learner logged, on the timeline.
            def side_by_side(driver: WebDriver) -> bool:
                final = latest_meta(settings)
                learned = {r[0]: int(re.sub(r"\D", "", r[2]) or -1) for r in rows_of(driver, "models-table")}
                return final is not None and learned == {"champion": final.learned,
                                                         "slow": final.challengers["slow"]["learned"]}

            wait_until(browser, "the champion and its challenger", side_by_side, 60)
            drifts = log.read_text().count("drift: drift.ADWIN() fired at")
            marks = [r for r in rows_of(browser, "marks-table") if r[1] == "drift"]
            assert drifts >= 1 and len(marks) == drifts
            assert sum(latest_meta(settings).dead_letters.values()) == len(bad)  # type: ignore[union-attr]
            assert text_of(browser, "healthy") == "healthy" and text_of(browser, "ready") == "ready"
            assert points(browser, "version-chart") >= 1 and points(browser, "rate-chart") > 0
            options = browser.find_elements(By.CSS_SELECTOR, "#metric-select option")
            assert "Accuracy" in [o.get_attribute("value") for o in options]
            assert page_errors(browser) == []
            shot = save_screenshot(browser, tmp_path / "dashboard.png")
            assert shot.stat().st_size > 10_000
    finally:
        learner.send_signal(signal.SIGTERM)
        try:
            assert learner.wait(timeout=60) == 0, log.read_text()
        except subprocess.TimeoutExpired:
            learner.kill()
            learner.wait()
            raise


def test_under_key_scope_the_dashboard_shows_each_partitions_version_and_the_key_models(
    kafka: KafkaBroker, redis_server: RedisServer, unique: Callable[[str], str],
    topic: Callable[..., str], tmp_path: Path,
) -> None:
    port = free_port()
    settings = key_settings(kafka, redis_server, unique, topic, http_port=port)
    stream = keyed_event_bytes(phishing()[:600], keys=12)
    produce(kafka.bootstrap, settings.events_topic, [(k, raw) for k, _, raw in stream])
    log = tmp_path / "learner.log"
    learner = service.spawn("learn", service_env(settings), stdout=log)
    try:
        wait_for("the learner's HTTP server", lambda: f"HTTP on http://127.0.0.1:{port}/" in log.read_text())
        with chromium() as browser:
            browser.get(f"http://127.0.0.1:{port}/")

            def shows_the_stores_partitions(driver: WebDriver) -> bool:
                assert learner.poll() is None, log.read_text()
                if covered(settings) != len(stream):
                    return False
                stored = {str(p): str(meta.version) for p, (meta, _) in partitions(settings).items()}
                shown = {r[0]: r[1] for r in rows_of(driver, "partitions-table")}
                keys = {r[0]: r[1] for r in rows_of(driver, "keys-table")}
                return (shown == stored and keys.get("created") == "12"
                        and text_of(driver, "version") == max(stored.values(), key=int))

            wait_until(browser, "each partition at the store's version, every key created",
                       shows_the_stores_partitions, 60)
            keys = {r[0]: r[1] for r in rows_of(browser, "keys-table")}
            hits, misses = int(keys["hits"]), int(keys["misses"])
            assert hits + misses == len(stream) and float(keys["cache hit ratio"]) == pytest.approx(
                hits / len(stream), abs=5e-4)
            assert text_of(browser, "version-label") == "Highest partition version"
            assert text_of(browser, "partitions-metric") == "Accuracy"
            assert all(0 <= float(r[2]) <= 1 for r in rows_of(browser, "partitions-table"))
            assert browser.find_element(By.ID, "keys-panel").get_attribute("hidden") is None
            assert browser.find_element(By.ID, "models-panel").get_attribute("hidden") is not None
            assert page_errors(browser) == []
    finally:
        service.stop(learner)
    assert learner.returncode == 0, log.read_text()[-3000:]


def test_a_table_the_page_redraws_all_the_time_is_read_whole() -> None:
    page = ("<table id='t'><tbody></tbody></table><script>"
            "let n = 0; const body = document.querySelector('#t tbody');"
            "setInterval(() => { n += 1; body.replaceChildren(...[0, 1, 2].map((i) => {"
            " const tr = document.createElement('tr');"
            " for (const v of [i, n]) {"
            "  const td = document.createElement('td'); td.textContent = v; tr.append(td); }"
            " return tr; })); }, 0);</script>")
    with chromium() as browser:
        browser.get("data:text/html," + urllib.parse.quote(page))
        wait_until(browser, "the first rows", lambda driver: rows_of(driver, "t"))
        for _ in range(300):
            rows = rows_of(browser, "t")
            assert [r[0] for r in rows] == ["0", "1", "2"] and len({r[1] for r in rows}) == 1
