"""librdkafka's log, without floods: each kind of line once, then summed up.

A broker that cannot be reached makes librdkafka log a line per connection attempt and per
thread, ~20 a second. Lines are told apart by their facility and their text with the numbers
taken out; the first of each kind is logged as it is, the next ones are counted, and the count
is logged with the line every ``SUMMARY_S`` seconds while they go on.

>>> kafka_log = KafkaLog(logging.getLogger("demo"))
>>> for ms in range(3):
...     kafka_log.log(logging.ERROR, "%s [%s] %s", "FAIL", "rdkafka#producer-1", f"refused (after {ms}ms)")
>>> kafka_log.suppressed
{('FAIL', 'refused (after ms)'): 2}
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

SUMMARY_S = 30.0
_NUMBERS = re.compile(r"\d+")


class KafkaLog:
    """What librdkafka's clients are given as their ``logger``: they call ``log`` only."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self.last: dict[tuple[str, str], float] = {}  # kind -> when last logged
        self.suppressed: dict[tuple[str, str], int] = {}

    def log(self, level: int, fmt: str, *args: Any) -> None:
        fac, text = (str(args[0]), str(args[-1])) if len(args) >= 2 else ("", fmt % args)
        kind = (fac, _NUMBERS.sub("", text))
        now = time.monotonic()
        last = self.last.get(kind)
        if last is not None and now - last < SUMMARY_S:
            self.suppressed[kind] = self.suppressed.get(kind, 0) + 1
            return
        self.last[kind] = now
        more = self.suppressed.pop(kind, 0)
        suffix = f" ({more} more like it in the last {now - last:.0f} s)" if more and last else ""
        self.logger.log(level, "Kafka: %s%s", text, suffix)
