"""The dashboard in a real browser (Debian's chromium, headless) against an in-process HTTP
server whose board a thread feeds as a loop would: no Kafka, no Redis."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver import Chrome
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from stream_learner.observe.board import Board
from stream_learner.observe.exposition import Exposition
from stream_learner.observe.server import HttpServer
from tests.browser import chromium, page_errors, points, rows_of, save_screenshot, text_of, wait_until

# Names from the server are any strings: the page must show them, never run them.
HOSTILE_METRIC = '<img src=x onerror="window.pwned=1">'
HOSTILE_REASON = "<script>window.pwned=2</script>"
HOSTILE_TOPIC = '"><svg onload="window.pwned=3">'
LAST_VERSION = 7  # the feed checkpoints versions 1 ... 7


def feed(board: Board, stop: threading.Event, versions: int = LAST_VERSION) -> None:
    """A loop's writes: a batch, the figures, and a checkpoint (a new version) every 3 rounds,
    up to ``versions``; then it idles, as a caught-up learner does."""
    events, version, i = 0, 1, 0
    board.loaded(version)
    board.set(lease_held=True)
    while not stop.is_set():
        if version < versions:
            events += 50
            if i % 3 == 2:
                version += 1
                board.checkpointed(version=version, nbytes=1500 + i, pause_s=0.002)
        board.batch(events=events, predicted=events, learned=events - 5,
                    dead_letters={HOSTILE_REASON: 2, "bad_json": 3}, version=version)
        accuracy = 0.5 + 0.4 * (1 - 1 / (1 + i / 5))
        board.refresh(metrics={"Accuracy": accuracy, "Accuracy@1000": accuracy + 0.02, "F1": None,
                               HOSTILE_METRIC: 0.5},
                      lags={(HOSTILE_TOPIC, 0): 12, ("events", 1): 3})
        i += 1
        stop.wait(0.05)


@pytest.fixture(scope="module")
def browser() -> Iterator[Chrome]:
    with chromium() as driver:
        yield driver


@pytest.fixture
def learner_page() -> Iterator[tuple[str, Board]]:
    board = Board("fraud <b>&amp;", "learn", instance="one")
    stop = threading.Event()
    thread = threading.Thread(target=feed, args=(board, stop), daemon=True)
    thread.start()
    with HttpServer(board, Exposition(board), host="127.0.0.1", port=0) as server:
        yield f"http://127.0.0.1:{server.port}/", board
    stop.set()
    thread.join(5)


def test_the_dashboard_draws_the_boards_figures_and_shows_server_strings_as_text(
    browser: Chrome, learner_page: tuple[str, Board], tmp_path: Path,
) -> None:
    url, board = learner_page
    deadline = time.monotonic() + 10
    while board.snapshot().version < LAST_VERSION and time.monotonic() < deadline:  # the page's first
        time.sleep(0.02)  # poll then shows the last version, and the test need not wait for a second
    page_errors(browser)  # (another test's page's, if any)
    browser.get(url)

    wait_until(browser, "the metric chart's points and version 7",
               lambda d: points(d, "metric-chart") > 0 and text_of(d, "version") == "7")
    assert board.snapshot().version == LAST_VERSION
    assert text_of(browser, "model") == "fraud <b>&amp;" and text_of(browser, "mode") == "learn"
    assert text_of(browser, "healthy") == "healthy" and text_of(browser, "ready") == "ready"
    assert text_of(browser, "checkpoint-label") == "Last checkpoint"
    assert text_of(browser, "checkpoint").endswith(" ago")

    # The metric chart draws Accuracy (cumulative) and Accuracy@1000; the selector offers the others.
    select = Select(browser.find_element(By.ID, "metric-select"))
    assert [o.get_attribute("textContent") for o in select.options] == ["Accuracy", "F1", HOSTILE_METRIC]
    legend = browser.find_element(By.ID, "metric-legend").text
    assert "Accuracy (cumulative)" in legend and "Accuracy@1000 (last 1000 events)" in legend
    assert points(browser, "rate-chart") > 0
    assert points(browser, "version-chart") == LAST_VERSION  # versions 1, 2, ... 7

    # Incremental: later polls ask only for what is new, and the drawn points grow with them.
    drawn = points(browser, "metric-chart")
    wait_until(browser, "more points", lambda d: points(d, "metric-chart") > drawn)
    asked = [name for name in browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)") if "api/status" in name]
    assert asked[0].endswith("since=0") and any(not n.endswith("since=0") for n in asked[1:])
    assert len(board.history()[0]) >= points(browser, "metric-chart")

    # Strings from the server are text, in tables and options alike; none ran.
    lags = [row[:3] for row in rows_of(browser, "lag-table")]
    assert lags == [[HOSTILE_TOPIC, "0", "12"], ["events", "1", "3"]]
    letters = rows_of(browser, "letters-table")
    assert letters == [["bad_json", "3"], [HOSTILE_REASON, "2"]]
    select.select_by_value(HOSTILE_METRIC)
    wait_until(browser, "the chosen metric", lambda d: HOSTILE_METRIC in text_of(d, "metric-title"))
    assert points(browser, "metric-chart") > 0
    assert browser.execute_script("return window.pwned") is None
    assert browser.find_elements(By.CSS_SELECTOR, "img, script:not([src])") == []
    assert page_errors(browser) == []
    save_screenshot(browser, tmp_path / "dashboard-unit.png")


def test_a_frozen_predictors_page_shows_its_reloads(browser: Chrome) -> None:
    board = Board("fraud", "frozen")
    board.loaded(4)
    board.set(reloads=3)
    board.batch(events=10, predicted=10, learned=0, dead_letters={}, version=4)
    board.refresh(metrics={}, lags={("events", 0): 0})
    with HttpServer(board, Exposition(board), host="127.0.0.1", port=0) as server:
        page_errors(browser)  # (another test's page's, if any)
        browser.get(f"http://127.0.0.1:{server.port}/")
        wait_until(browser, "version 4", lambda d: text_of(d, "version") == "4")
        assert text_of(browser, "checkpoint-label") == "Reloads" and text_of(browser, "checkpoint") == "3"
        assert text_of(browser, "mode") == "frozen" and text_of(browser, "ready") == "ready"
        assert points(browser, "metric-chart") == 0  # a predictor has no prequential metric
        assert text_of(browser, "letters-empty") == "none"
        assert page_errors(browser) == []
