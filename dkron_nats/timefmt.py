"""Time rendering and parsing in the forms Dkron clients expect (Go's RFC3339Nano and the zero time)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo

ZERO_TIME = "0001-01-01T00:00:00Z"
"""Go's zero time: Dkron's `next` when nothing is scheduled and `finished_at` while running."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_ns(dt: datetime) -> int:
    """Whole nanoseconds since the epoch, exact for microsecond datetimes."""
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def from_ns(ns: int) -> datetime:
    return _EPOCH + timedelta(microseconds=ns // 1_000)


def later_of(a: datetime | None, b: datetime | None) -> datetime | None:
    """The later of two optional times."""
    if a is None or b is None:
        return a or b
    return max(a, b)


def rfc3339(dt: datetime | None, tz: tzinfo | None = None) -> str | None:
    """Go's RFC3339Nano: trailing fractional zeros trimmed, `Z` for UTC. None stays None.

    Built from `isoformat` (`YYYY-MM-DDTHH:MM:SS[.ffffff]+HH:MM[:SS]`), several times faster than strftime:
    every execution event and API answer renders a few of these."""
    if dt is None:
        return None
    text = dt.astimezone(tz or UTC).isoformat()
    base, rest = text[:19], text[19:]
    if rest.startswith("."):
        fraction, rest = rest[:7].rstrip("0"), rest[7:]
        base += fraction
    offset = rest[:6]  # Go prints whole minutes
    return base + ("Z" if offset in ("+00:00", "-00:00", "") else offset)


def rfc3339_or_zero(dt: datetime | None, tz: tzinfo | None = None) -> str:
    return rfc3339(dt, tz) or ZERO_TIME


def parse_time(text: str) -> datetime | None:
    """RFC3339 (any offset) or the HTML datetime-local form `2006-01-02T15:04` (UTC), as Dkron accepts.

    The Go zero time parses to None (it means "unset").
    """
    raw = text.strip()
    if raw in ("", ZERO_TIME):
        return None
    if len(raw) == 16 and raw[10] == "T":
        return datetime.strptime(raw, "%Y-%m-%dT%H:%M").replace(tzinfo=UTC)
    if not (raw.endswith(("Z", "z")) or "+" in raw[10:] or "-" in raw[10:]):
        raise ValueError(f'parsing time "{text}": missing time zone offset')
    value = raw[:-1] + "+00:00" if raw.endswith(("Z", "z")) else raw
    head, sep, rest = value.partition(".")
    if sep:  # Python accepts at most 6 fractional digits; Go sends up to 9
        digits = len(rest) - len(rest.lstrip("0123456789"))
        value = f"{head}.{rest[: min(digits, 6)]}{rest[digits:]}"
    parsed = datetime.fromisoformat(value)
    if parsed.year <= 1:
        return None
    return parsed.astimezone(UTC)
