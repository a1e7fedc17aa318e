"""``--log-format json``: one JSON object per log line, for log shippers.

Each line has ``ts`` (Unix time), ``level``, ``logger`` and ``message``; a line logged with
figures (the learner's progress lines) carries them as ``figures``; an exception, as ``error``.

>>> import logging
>>> record = logging.LogRecord("stream_learner", logging.INFO, "", 0, "v%d", (3,), None)
>>> record.figures = {"lag": 0}
>>> JsonFormatter().format(record).split(",", 1)[1]
'"level":"INFO","logger":"stream_learner","message":"v3","figures":{"lag":0}}'
"""

from __future__ import annotations

import logging
from typing import Any

import orjson


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {"ts": round(record.created, 3), "level": record.levelname,
                               "logger": record.name, "message": record.getMessage()}
        figures = getattr(record, "figures", None)
        if figures is not None:
            doc["figures"] = figures
        if record.exc_info:
            doc["error"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
