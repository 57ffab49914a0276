"""The node's log: one handler on the root logger, its level and format (`--log-level`, `--log-format`).

`configure` sets it up once at start; `apply` changes level and format while the node runs (a SIGHUP reload,
see reload.py). Every handler carries logredact's filter, so no format can show a credential.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from dkron_nats import logredact
from dkron_nats.logformat import formatter

HANDLER_NAME = "dkron-nats"
LOG_FORMATS = ("text", "json")
_LEVELS = {"warn": "WARNING", "fatal": "CRITICAL", "panic": "CRITICAL"}
"""Dkron's level names (logrus) that Python names differently."""


def python_level(level: str) -> int:
    """A `--log-level` (debug, info, warn, warning, error, fatal, panic) as a `logging` level."""
    named = _LEVELS.get(level.lower(), level.upper())
    return logging.getLevelNamesMapping()[named]


def configure(level: str, log_format: str, node: str, stream: TextIO | None = None) -> logging.Handler:
    """Log to `stream` (stderr) at `level` in `log_format`; returns the node's handler."""
    root = logging.getLogger()
    handler = _node_handler(root)
    if handler is None:
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.set_name(HANDLER_NAME)
        root.addHandler(handler)
    apply(level, log_format, node)
    logredact.install()  # URL credentials and tokens never reach the log, whoever logs them (httpx does)
    return handler


def apply(level: str, log_format: str, node: str) -> None:
    """Set the level and the node handler's format."""
    root = logging.getLogger()
    numeric = python_level(level)
    root.setLevel(numeric)
    handler = _node_handler(root)
    if handler is not None:
        handler.setFormatter(formatter(log_format, node))
    # nats-py reports every reconnect attempt as an error: only worth seeing when debugging.
    logging.getLogger("nats").setLevel(logging.WARNING if numeric <= logging.DEBUG else logging.ERROR)


def _node_handler(root: logging.Logger) -> logging.Handler | None:
    return next((h for h in root.handlers if h.get_name() == HANDLER_NAME), None)
