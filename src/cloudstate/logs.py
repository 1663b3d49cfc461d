"""Logging set-up: readable text on a terminal, one JSON object per line otherwise.

Log records never carry secrets: nothing in cloudstate logs credentials, tokens, key material
or webhook secrets, and request logs have method, path, status and duration only. What
libraries log about their own requests (botocore at DEBUG: signed headers, session tokens) is
redacted at the handlers (``cloudstate.redaction``).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from cloudstate import redaction
from cloudstate.config import Settings

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(
            {
                k: v
                for k, v in record.__dict__.items()
                if k not in _STANDARD and k != "color_message"
            }
        )
        if record.exc_text:  # set (and redacted) by the handler's filter
            entry["exception"] = record.exc_text
        elif record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(settings: Settings) -> None:
    """Install one handler on the root logger, per ``log_level`` and ``log_format``, and a
    redacting filter on it and on every other handler there is."""
    handler = logging.StreamHandler(sys.stderr)
    as_json = settings.log_format == "json" or (
        settings.log_format == "auto" and not sys.stderr.isatty()
    )
    if as_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    redaction.install()
    root.setLevel(settings.log_level)
    if settings.log_level != "DEBUG":
        for noisy in ("alembic", "uvicorn.access", "httpx"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
