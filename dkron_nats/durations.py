"""Duration syntaxes that Dkron users already write: Go durations ("1h30m") and ISO-8601 ("PT30M")."""

from __future__ import annotations

import re
from datetime import timedelta

_GO_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
MAX_DURATION = timedelta(microseconds=(2**63 - 1) // 1000)
"""Go's longest duration (an int64 of nanoseconds, about 292 years): longer ones are refused, as Go does."""
_GO_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_ISO = re.compile(
    r"^P(?:(?P<Y>\d+)Y)?(?:(?P<M>\d+)M)?(?:(?P<D>\d+)D)?"
    r"(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)


def parse_go_duration(text: str) -> timedelta:
    """Parse a Go `time.ParseDuration` string such as "90s", "1h30m" or "-1.5h".

    A bare number other than "0" is refused, as Go does ("30" is not a duration).
    """
    s = text.strip()
    if not s:
        raise ValueError(f'invalid duration "{text}"')
    sign = 1.0
    if s[0] in "+-":
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return timedelta(0)
    pos = 0
    total = 0.0
    while pos < len(s):
        m = _GO_PART.match(s, pos)
        if m is None:
            raise ValueError(f'invalid duration "{text}"')
        total += float(m.group(1)) * _GO_UNITS[m.group(2)]
        pos = m.end()
    if pos == 0:
        raise ValueError(f'invalid duration "{text}"')
    return _bounded(text, sign * total)


def parse_iso_duration(text: str) -> timedelta:
    """Parse the ISO-8601 subset Dkron's `@after` accepts: Y = 365 days, M (date part) = 30 days."""
    m = _ISO.match(text.strip())
    if m is None or text.strip() in ("P", "PT") or text.strip().endswith("T"):
        raise ValueError(f'invalid ISO-8601 duration "{text}"')
    g = {k: float(v) if v else 0.0 for k, v in m.groupdict().items()}
    days = g["Y"] * 365 + g["M"] * 30 + g["D"]
    return _bounded(text, days * 86400 + g["h"] * 3600 + g["m"] * 60 + g["s"])


def _bounded(text: str, seconds: float) -> timedelta:
    """The duration, or ValueError when it is longer than Go allows (timedelta itself overflows later)."""
    if abs(seconds) > MAX_DURATION.total_seconds():
        raise ValueError(f'invalid duration "{text}": longer than the maximum of 2562047h (about 292 years)')
    return timedelta(seconds=seconds)


def parse_duration(text: str) -> timedelta:
    """A Go duration ("90s", "1h30m") or an ISO-8601 one ("PT5M")."""
    stripped = text.strip()
    if stripped[:1] in ("P", "p"):
        return parse_iso_duration(stripped.upper())
    return parse_go_duration(stripped)


def format_duration(td: timedelta) -> str:
    """Render a timedelta compactly, Go style ("1h30m0s" becomes "1h30m")."""
    secs = td.total_seconds()
    if secs == 0:
        return "0s"
    sign = "-" if secs < 0 else ""
    secs = abs(secs)
    hours, rem = divmod(secs, 3600)
    minutes, seconds = divmod(rem, 60)
    out = ""
    if hours:
        out += f"{int(hours)}h"
    if minutes:
        out += f"{int(minutes)}m"
    if seconds:
        out += f"{seconds:g}s"
    return sign + out
