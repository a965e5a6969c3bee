"""Structured JSON log lines carrying the generation id and trace id of the request they belong to.

The relay sets ``generation_id`` (a context variable) as soon as a request has an id, and
``trace_id`` when tracing is on (``lib.tracing``); every log line written while that
request runs, in its task or in the threads its database work hops to (asgiref copies the
context), carries them. Other traced requests (Django's pages) take the current span's. Secrets are scrubbed
from every line as a last line of defence: the code never logs them on purpose.
"""

from __future__ import annotations

import logging
import re
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson

from lib import tracing

generation_id: ContextVar[str | None] = ContextVar("generation_id", default=None)
trace_id: ContextVar[str | None] = ContextVar("trace_id", default=None)

# Router API keys, bearer tokens and common vendor key shapes.
_SECRET_PATTERNS = re.compile(
    r"sk-siraya-[A-Za-z0-9_\-]+"
    r"|(?i:bearer)\s+[^\s\"',]+"
    r"|sk-[A-Za-z0-9_\-]{16,}"
    r"|AKIA[0-9A-Z]{16}"
)
REDACTED = "[redacted]"
# LogRecord attributes that are not "extra" fields.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}


def current_trace_id() -> str | None:
    """The trace id of the request being served, or of the current span (None: not traced)."""
    if not tracing.ENABLED:
        return None
    return trace_id.get() or tracing.trace_id() or None


def redact(text: str) -> str:
    return _SECRET_PATTERNS.sub(REDACTED, text)


class GenerationIdFilter(logging.Filter):
    """Attach the current request's generation id to the record (if it has none)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "generation_id", None) is None:
            record.generation_id = generation_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, generation_id, trace_id, extras, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "generation_id": getattr(record, "generation_id", None) or generation_id.get(),
            "trace_id": getattr(record, "trace_id", None) or current_trace_id(),
        }
        for name, value in record.__dict__.items():
            if name not in _STANDARD and name not in entry:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        line = orjson.dumps(entry, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
        return redact(line)


class PlainFormatter(logging.Formatter):
    """Human-readable lines for development, with the generation id and the same scrubbing."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(generation_id)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, "generation_id", None) is None:
            record.generation_id = generation_id.get() or "-"
        return redact(super().format(record))
