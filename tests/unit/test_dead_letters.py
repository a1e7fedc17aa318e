"""Dead-letter records: headers cut by bytes, bodies cut to fit, logs summed up."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from consumers.clients.base import Headers
from consumers.dead_letters import Author, DeadLetters, detail_header, fit
from stream_learner.errors import InvalidEvent
from stream_learner.events import Source


def test_the_detail_is_cut_at_1000_bytes_on_a_character_boundary() -> None:
    cut = detail_header("é" * 999)  # 1,998 bytes
    assert len(cut) == 1000 and cut.decode() == "é" * 500
    assert detail_header("\ud800 lone") == b"? lone"


def test_a_body_that_would_not_fit_is_cut_and_says_so() -> None:
    headers: Headers = [("reason", b"x_not_object")]
    assert fit(b"x" * 100, headers, max_bytes=1000) == (b"x" * 100, headers)
    value, marked = fit(b"y" * 5000, headers, max_bytes=2000)
    assert value is not None and 0 < len(value) < 2000 - 512 and set(value) == {ord("y")}
    assert marked == [*headers, ("truncated", b"5000")]
    assert sum(len(k) + len(v or b"") for k, v in marked) + len(value) + 512 <= 2000
    assert fit(None, headers, max_bytes=10) == (None, headers)


class Sends:
    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []

    def send(self, *args: Any, **kwargs: Any) -> None:
        self.sent.append((args, kwargs))


def test_each_reason_is_logged_once_then_summed_up(caplog: pytest.LogCaptureFixture) -> None:
    letters = DeadLetters(Sends(), topic="dlq", author=Author("m", "learn", "host"),  # type: ignore[arg-type]
                          max_bytes=10_000)
    caplog.set_level(logging.WARNING)
    for offset in range(500):
        letters.count(InvalidEvent("bad_label" if offset % 2 else "too_large", "why"),
                      Source("events", 0, offset))
    letters.summarise(force=True)
    assert letters.counts == {"bad_label": 250, "too_large": 250}
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    assert lines[-1] == "dead-lettered 498 more events: bad_label 249, too_large 249"
