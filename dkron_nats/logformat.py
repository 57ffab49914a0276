"""`--log-format json`: one JSON object per log record, on one line, for log collectors.

Each object has `time` (UTC, RFC 3339 with milliseconds), `level`, `logger`, `message` and `node` (this
node's name); `job`, `execution` and `node` given by a record (`logger.info(..., extra={"job": name})`) are
fields too, and a traceback is `exception`. Code working on one job or execution says so once with
`about(job=..., execution=...)`: every record logged inside it (and in tasks started there) carries them.
Secrets are masked before any formatter sees the record (logredact.py's filter sits on the handler); the
extra fields are masked here, being free text too.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from dkron_nats.secrets import mask_text

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CONTEXT_FIELDS = ("job", "execution", "node")
"""Record attributes (from `extra=`) written as fields of their own."""

_context: ContextVar[dict[str, str]] = ContextVar("log_context", default={})  # noqa: B039  # never mutated


@contextmanager
def about(**fields: str) -> Iterator[None]:
    """Records logged inside this block (and in tasks started inside it) carry `fields` (job, execution)."""
    token = _context.set({**_context.get(), **{k: v for k, v in fields.items() if v}})
    try:
        yield
    finally:
        _context.reset(token)


class JsonFormatter(logging.Formatter):
    def __init__(self, node: str = "") -> None:
        super().__init__()
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _rfc3339(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.node:
            entry["node"] = self.node
        context = _context.get()
        for name in CONTEXT_FIELDS:
            value = record.__dict__.get(name, context.get(name))
            if value is not None and value != "":
                entry[name] = mask_text(str(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def _rfc3339(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def formatter(log_format: str, node: str) -> logging.Formatter:
    """The formatter of `--log-format` (`text` or `json`)."""
    return JsonFormatter(node) if log_format == "json" else logging.Formatter(TEXT_FORMAT)
