"""Keeping credentials out of the node's log, whoever logs them (our code, httpx, nats, a plugin).

`RedactingFilter` rewrites each record before it is formatted: URL passwords, secret-named query parameters,
bearer tokens and secret-named `name=value` pairs become `***` (`secrets.mask_text`). httpx, for one, logs
every request's full URL at INFO. It sits on the root logger's handlers, not on the root logger: a logger's
own filters do not see what its children log.
"""

from __future__ import annotations

import logging

from dkron_nats.secrets import mask_text


class RedactingFilter(logging.Filter):
    """Masks what `mask_text` recognises in a record's message and in its exception's text."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = mask_text(message)
        if cleaned != message:
            # The merged message replaces the template and its arguments, which is where a secret hides.
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_text(record.exc_text)
        return True


def install(logger: logging.Logger | None = None) -> None:
    """Put one `RedactingFilter` on each handler of `logger` (the root logger by default)."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
