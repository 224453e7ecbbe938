"""Structured logs: one JSON object per line on stderr, in the server and in the worker process.

Every record carries ``ts`` (Unix seconds), ``level``, ``process`` (server | worker), ``logger`` and
``msg``; fields passed as ``extra={"fields": {...}}`` (``job_id`` above all) are merged in, so one job's
lines can be found with ``grep '"job_id": "<id>"'`` or ``jq 'select(.job_id == "<id>")'``.
"""

from __future__ import annotations

import json
import logging
import sys

_HANDLER_NAME = "assetgen-json"


class JsonFormatter(logging.Formatter):
    def __init__(self, process: str) -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": round(record.created, 6), "level": record.levelname.lower(), "process": self.process,
               "logger": record.name, "msg": record.getMessage()}
        out.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            out["traceback"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_logging(level: str, process: str) -> None:
    """JSON lines on stderr for the ``assetgen`` loggers (and uvicorn's error log); idempotent."""
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter(process))
    for name in ("assetgen", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers = [h for h in logger.handlers if h.get_name() != _HANDLER_NAME] + [handler]
        logger.setLevel(level.upper())
        logger.propagate = False


def fields(**values) -> dict:
    """``extra=`` for a log call: ``log.info("job queued", extra=fields(job_id=job.id))``."""
    return {"fields": values}
