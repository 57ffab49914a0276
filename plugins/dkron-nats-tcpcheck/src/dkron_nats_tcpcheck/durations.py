"""Go ``time.ParseDuration`` strings ("5s", "1m30s", "250ms"), the way Dkron users write timeouts."""

from __future__ import annotations

import re

_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(text: str) -> float:
    """Seconds in `text`; ValueError if it is not a Go duration (a bare number other than 0 is not)."""
    body = text.strip()
    sign = -1.0 if body.startswith("-") else 1.0
    if body[:1] in ("+", "-"):
        body = body[1:]
    if body == "0":
        return 0.0
    total, pos = 0.0, 0
    while pos < len(body):
        part = _PART.match(body, pos)
        if part is None:
            raise ValueError(f'invalid duration "{text}"')
        total += float(part.group(1)) * _UNIT_SECONDS[part.group(2)]
        pos = part.end()
    if pos == 0:
        raise ValueError(f'invalid duration "{text}"')
    return sign * total
