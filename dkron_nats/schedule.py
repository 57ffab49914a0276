"""Dkron's schedule syntax, parsed once and evaluated as pure, timezone-aware functions.

Accepted forms (Dkron v4 / robfig cron v3 semantics unless noted; tests/unit/test_cron_robfig.py compares
the cron fields with robfig itself):

* Six cron fields ``sec min hour dom month dow``, or five (``min hour dom month dow``, seconds = 0) as an
  extension. A field is a comma list (empty items skipped) of ``*`` or ``?`` (the whole range, in any
  field; robfig ignores a ``-...`` after them), ``a``, ``a-b``, ``*/n``, ``a-b/n`` and ``a/n``
  (= ``a-max/n``). Numbers are read as Go's ``strconv.Atoi`` reads them (``+5`` and ``05`` are 5). Months
  take ``JAN``-``DEC`` and days ``SUN``-``SAT``, case-insensitively; day of week is 0-6, and a written 7
  is Sunday (robfig refuses it; earlier versions accepted it, so stored jobs keep working). A day field
  is unrestricted when one of its items is ``*`` or ``?`` without a step above 1
  (``*/2`` is restricted); when both day fields are restricted a day matches if either does, otherwise
  both must match.
* ``~`` anywhere in a cron field stands for a per-job constant H, the sum of the code points of the job
  name, reduced per field: seconds and minutes ``H % 60``, hours ``H % 24``, day of month ``H % 28 + 1``,
  month ``H % 12 + 1``, day of week ``H % 7``. Job ``test_job`` turns ``0 0 ~ * * *`` into ``0 0 18 * * *``.
* ``@yearly``/``@annually``, ``@monthly``, ``@weekly``, ``@daily``/``@midnight``, ``@hourly`` and
  ``@minutely``: shorthands for cron specs. Unlike Dkron, they run in the job's time zone, and their
  names are case-insensitive.
* ``@every <Go duration>``: at anchor + k * interval, k >= 1, in elapsed time (DST plays no part). The
  interval is rounded down to whole seconds, and raised to 1 s if shorter; zero or negative is an error.
* ``@at <RFC3339>``: once, at that instant.
* ``@after <RFC3339> <<ISO-8601 duration>``: once, at that instant; when the job is defined (anchor) after
  that instant but within the grace duration (inclusive), once at the anchor instead; later, never.
* ``@manually``: never; the job only runs on demand.
* A spec starting with ``TZ=<zone>`` or ``CRON_TZ=<zone>`` (the name ends at the first space, as in
  robfig) sets the zone for the rest of the spec, overriding the job's ``timezone``. The job time zone
  (IANA name) applies to cron specs and descriptors. ``""`` and ``"Local"`` both mean UTC here: a cluster
  has no single local zone, so "Local" cannot mean the server's.

Daylight-saving rules. Cron specs are matched against the zone's *wall-clock* times; each matching wall
time is then mapped to real instants:

* Spring forward (a wall time that does not exist): a spec whose hour field matches every hour simply
  skips those times, the next fire is at most an hour away. Any other spec (a fixed-time job such as
  "daily at 02:30") fires once at the first instant after the gap (03:00 local), as Vixie cron does, so
  that a job is never silently skipped for a day. Several missing times in one gap collapse into that
  single fire, which also coincides with a fire for the first wall time after the gap.
* Fall back (a wall time that occurs twice): a spec whose hour field matches every hour fires at both
  real instants (an hourly job keeps firing every real hour); any other spec fires only at the first
  occurrence (a daily 01:30 job runs once that day).

"Matches every hour" means the hour field covers all 24 hours (``*``, ``*/1``, ``0-23``...): ``@hourly``
and ``@minutely`` do, ``@daily`` does not.

Every schedule's fire instants are strictly increasing aware UTC datetimes. As in robfig, the cron search
ends with the fifth year after the year of the next second; a spec that cannot match in that span
(``0 0 0 30 2 *``, or February 29 from March 2096, 2100 being no leap year) never fires. ``@after``
inside its grace period fires at the anchor itself, so look for it with ``next_after`` from just before
the anchor. A bad job ``timezone`` raises TimezoneError; every other problem raises ScheduleError.
"""

from __future__ import annotations

import calendar
import re
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dkron_nats.durations import parse_go_duration, parse_iso_duration

__all__ = [
    "Schedule",
    "ScheduleError",
    "TimezoneError",
    "next_fire_times",
    "parse_schedule",
    "validate_timezone",
]

_PREFIX = "can't parse job schedule: "
_SECOND = timedelta(seconds=1)
_FIRST_WINDOW = timedelta(minutes=1)
_SEARCH_YEARS = 5
_LAST_YEAR = 9998
_UTC_ZONE = ZoneInfo("UTC")
_ZERO = timedelta(0)
_Wall = tuple[int, int, int, int, int, int]
"""A wall-clock time as (year, month, day, hour, minute, second)."""


class ScheduleError(ValueError):
    """A schedule that cannot be parsed; ``str(error)`` is the message for the user."""

    def __init__(self, detail: str) -> None:
        super().__init__(_PREFIX + detail)
        self.detail = detail


class TimezoneError(ValueError):
    """An unknown IANA time zone name."""

    def __init__(self, name: str) -> None:
        super().__init__(f"unknown time zone {name}")
        self.name = name


def validate_timezone(name: str) -> ZoneInfo:
    """The zone for a job's ``timezone`` field; ``""``, ``"UTC"`` and ``"Local"`` all give UTC."""
    if name in ("", "UTC", "Local"):
        return _UTC_ZONE
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise TimezoneError(name) from exc


def _require_aware(value: datetime, what: str) -> None:
    if value.tzinfo is None:
        raise ValueError(f"{what} must be a timezone-aware datetime, got {value!r}")


# --------------------------------------------------------------------------------------------------
# Schedules


class Schedule(ABC):
    """A parsed schedule. ``spec`` is the text it came from."""

    __slots__ = ("spec",)

    def __init__(self, spec: str) -> None:
        self.spec = spec

    @abstractmethod
    def next_after(self, after: datetime) -> datetime | None:
        """The first fire instant strictly after ``after`` (aware, any zone), in UTC; None: never again."""

    @property
    def is_manual(self) -> bool:
        return False

    def fires_between(self, start: datetime, end: datetime, limit: int) -> list[datetime]:
        """Fire instants t with start < t <= end, ascending: the last ``limit`` of them if there are more."""
        _require_aware(start, "start")
        _require_aware(end, "end")
        if limit <= 0 or end <= start:
            return []
        span = end - start
        width = _FIRST_WINDOW
        while True:  # widen a window ending at `end` until it holds `limit` fires or reaches `start`
            whole = width >= span
            found = self._collect(start if whole else end - width, end, limit)
            if whole or len(found) >= limit:
                return found
            width *= 4

    def _collect(self, start: datetime, end: datetime, limit: int) -> list[datetime]:
        kept: deque[datetime] = deque(maxlen=limit)
        fire = self.next_after(start)
        while fire is not None and fire <= end:
            kept.append(fire)
            fire = self.next_after(fire)
        return list(kept)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"


class _ManualSchedule(Schedule):
    __slots__ = ()

    def next_after(self, after: datetime) -> datetime | None:
        _require_aware(after, "after")
        return None

    @property
    def is_manual(self) -> bool:
        return True


class _OnceSchedule(Schedule):
    """``@at`` and ``@after``: a single instant, or none."""

    __slots__ = ("_at",)

    def __init__(self, spec: str, at: datetime | None) -> None:
        super().__init__(spec)
        self._at = at

    def next_after(self, after: datetime) -> datetime | None:
        _require_aware(after, "after")
        if self._at is not None and self._at > after:
            return self._at
        return None

    def fires_between(self, start: datetime, end: datetime, limit: int) -> list[datetime]:
        _require_aware(start, "start")
        _require_aware(end, "end")
        at = self._at
        return [at] if at is not None and limit > 0 and start < at <= end else []


class _EverySchedule(Schedule):
    """``@every``: anchor + k * interval for k >= 1."""

    __slots__ = ("_anchor", "_interval")

    def __init__(self, spec: str, interval: timedelta, anchor: datetime) -> None:
        super().__init__(spec)
        self._interval = interval
        self._anchor = anchor.astimezone(UTC)

    def _first_k_after(self, moment: datetime) -> int:
        elapsed = moment - self._anchor
        return 1 if elapsed < timedelta(0) else elapsed // self._interval + 1

    def next_after(self, after: datetime) -> datetime | None:
        _require_aware(after, "after")
        try:
            return self._anchor + self._first_k_after(after) * self._interval
        except OverflowError:  # past year 9999: a long interval has no further fire
            return None

    def fires_between(self, start: datetime, end: datetime, limit: int) -> list[datetime]:
        _require_aware(start, "start")
        _require_aware(end, "end")
        if limit <= 0 or end <= start:
            return []
        last = self._first_k_after(end) - 1  # the last k with anchor + k * interval <= end
        first = max(self._first_k_after(start), last - limit + 1)
        return [self._anchor + k * self._interval for k in range(first, last + 1)]


# --------------------------------------------------------------------------------------------------
# Cron fields


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    low: int
    high: int
    hash_mod: int
    hash_add: int
    names: dict[str, int]
    alias_top: int | None = None
    """A value above `high` accepted when written out, read as `low` (day of week 7 is Sunday)."""


_MONTHS = {m.lower(): i for i, m in enumerate(calendar.month_abbr) if m}
_DAYS = {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
_FIELDS = (
    _Field("second", 0, 59, 60, 0, {}),
    _Field("minute", 0, 59, 60, 0, {}),
    _Field("hour", 0, 23, 24, 0, {}),
    _Field("day-of-month", 1, 31, 28, 1, {}),
    _Field("month", 1, 12, 12, 1, _MONTHS),
    # robfig refuses 7; earlier versions of dkron-nats (and Vixie cron) read it as Sunday, and stored
    # jobs may use it, so it stays accepted (a documented difference). `*` and `a/n` still end at 6.
    _Field("day-of-week", 0, 6, 7, 0, _DAYS, alias_top=7),
)
_DESCRIPTORS = {
    "@yearly": "0 0 0 1 1 *",
    "@annually": "0 0 0 1 1 *",
    "@monthly": "0 0 0 1 * *",
    "@weekly": "0 0 0 * * 0",
    "@daily": "0 0 0 * * *",
    "@midnight": "0 0 0 * * *",
    "@hourly": "0 0 * * * *",
    "@minutely": "0 * * * * *",
}
_GO_INT = re.compile(r"[+-]?[0-9]+", re.ASCII)
_GO_INT_MAX = 2**63 - 1
_GO_SPACE = re.compile(r"[^\S\x1c-\x1f]+")
"""Whitespace as Go's strings.Fields sees it: Python's, less the separators U+001C-U+001F."""


def _go_fields(text: str) -> list[str]:
    return [token for token in _GO_SPACE.split(text) if token]


def _go_number(text: str) -> int | None:
    """``text`` read as robfig reads a number (Go's strconv.Atoi: ASCII digits, an optional sign, int64),
    or None; negative numbers are refused."""
    if _GO_INT.fullmatch(text) is None:
        return None
    value = int(text)
    return value if 0 <= value <= _GO_INT_MAX else None


def _field_value(text: str, field: _Field, whole: str) -> int:
    # Go lower-cases U+0130 (capital I with dot) to a plain "i", Python to "i" plus a combining dot
    named = field.names.get(text.replace("\u0130", "i").lower())
    if named is not None:
        return named
    value = _go_number(text)
    if value is None:
        raise ScheduleError(f"invalid {field.name} value {text!r} in {whole!r}")
    return value


def _check_range(first: int, last: int, field: _Field, whole: str) -> None:
    top = field.alias_top or field.high
    for value in (first, last):
        if not field.low <= value <= top:
            raise ScheduleError(f"{field.name} value {value} out of range {field.low}-{top} in {whole!r}")
    if first > last:
        raise ScheduleError(f"{field.name} range {first}-{last} starts after it ends in {whole!r}")


def _field_part(part: str, field: _Field, whole: str) -> tuple[range, bool]:
    """One list item, read as robfig reads it; True if it leaves the field unrestricted.

    ``*`` and ``?`` cover the whole field, whatever follows a ``-`` (robfig ignores it); ``a/n`` means
    ``a-max/n``. Only a ``*`` or ``?`` without a step above 1 leaves the field unrestricted.
    """
    span, *steps = part.split("/")
    if len(steps) > 1:
        raise ScheduleError(f"too many slashes in {part!r} in {field.name} field {whole!r}")
    bounds = span.split("-")
    unrestricted = bounds[0] in ("*", "?")
    if unrestricted:
        first, last = field.low, field.high
    elif len(bounds) > 2:
        raise ScheduleError(f"too many hyphens in {part!r} in {field.name} field {whole!r}")
    else:
        first = _field_value(bounds[0], field, whole)
        last = _field_value(bounds[-1], field, whole)
    step = 1
    if steps:
        parsed = _go_number(steps[0])
        if parsed is None or parsed == 0:
            raise ScheduleError(f"invalid step {steps[0]!r} in {field.name} field {whole!r}")
        step = parsed
        if len(bounds) == 1:
            last = field.high
        unrestricted = unrestricted and step == 1
    _check_range(first, last, field, whole)
    return range(first, last + 1, step), unrestricted


def _field_values(text: str, field: _Field) -> tuple[frozenset[int], bool]:
    """The field's values, and whether any list item leaves it unrestricted (robfig's "star bit")."""
    values: set[int] = set()
    unrestricted = False
    for part in text.split(","):
        if part:  # robfig skips empty list items; a field of commas alone has no values at all
            part_values, part_unrestricted = _field_part(part, field, text)
            values.update(field.low if v == field.alias_top else v for v in part_values)
            unrestricted = unrestricted or part_unrestricted
    return frozenset(values), unrestricted


def _next_table(values: frozenset[int], size: int) -> tuple[int, ...]:
    """``table[i]`` is the smallest allowed value >= i, or -1; ``table[size]`` is always -1."""
    table = [-1] * (size + 1)
    upcoming = -1
    for i in range(size - 1, -1, -1):
        if i in values:
            upcoming = i
        table[i] = upcoming
    return tuple(table)


def _days_in_month(year: int, month: int) -> int:
    return calendar.monthrange(year, month)[1]


class _CronFields:
    """Compiled cron fields: finds matching wall-clock times quickly, as plain integer tuples."""

    __slots__ = (
        "_any_day",
        "_day_or",
        "_dom_mask",
        "_dow_mask",
        "_first_minute",
        "_first_month",
        "_first_second",
        "_hours",
        "_minutes",
        "_months",
        "_never",
        "_seconds",
        "every_hour",
    )

    def __init__(self, sets: list[frozenset[int]], dom_star: bool, dow_star: bool) -> None:
        """``dom_star``/``dow_star``: the day field is unrestricted (robfig's star bit, see _field_part)."""
        seconds, minutes, hours, doms, months, dows = sets
        self._seconds = _next_table(seconds, 60)
        self._minutes = _next_table(minutes, 60)
        self._hours = _next_table(hours, 24)
        self._months = _next_table(months, 13)
        self._never = not (seconds and minutes and hours and months)  # a field of commas alone
        self._first_second = min(seconds, default=0)
        self._first_minute = min(minutes, default=0)
        self._first_month = min(months, default=1)
        self._dom_mask = sum(1 << d for d in doms)
        # indexed by Python's weekday() (Monday = 0), whereas cron counts Sunday = 0
        self._dow_mask = sum(1 << ((d + 6) % 7) for d in dows)
        self._day_or = not dom_star and not dow_star
        self._any_day = len(doms) == 31 and len(dows) == 7
        self.every_hour = len(hours) == 24

    def _day_matches(self, year: int, month: int, day: int) -> bool:
        if self._any_day:
            return True
        dom = self._dom_mask >> day & 1
        dow = self._dow_mask >> date(year, month, day).weekday() & 1
        return bool(dom | dow) if self._day_or else bool(dom & dow)

    def next_wall(self, year: int, month: int, day: int, hour: int, minute: int, second: int) -> _Wall | None:
        """The earliest matching wall time at or after the given one, or None within the search horizon.

        ``second`` may be 60 (meaning the next minute), so callers can ask for "strictly after" cheaply.
        Like robfig, it looks up to the end of the fifth year after the year of the given time.
        """
        if self._never:
            return None
        starts_next_year = (month, day, hour, minute, second) == (12, 31, 23, 59, 60)
        limit = min(year + (1 if starts_next_year else 0) + _SEARCH_YEARS, _LAST_YEAR)
        while year <= limit:
            wanted = self._months[month]
            if wanted != month:
                if wanted < 0:
                    year, wanted = year + 1, self._first_month
                month, day, hour, minute, second = wanted, 1, 0, 0, 0
                continue
            if self._day_matches(year, month, day):
                found = self._time_on_day(hour, minute, second)
                if found is not None:
                    return (year, month, day, *found)
            hour = minute = second = 0
            day += 1
            if day > _days_in_month(year, month):
                day, month = 1, month + 1
                if month > 12:
                    year, month = year + 1, 1
        return None

    def _time_on_day(self, hour: int, minute: int, second: int) -> tuple[int, int, int] | None:
        """The earliest matching (hour, minute, second) >= the given one on a matching day."""
        next_hour = self._hours[hour]
        if next_hour == hour:
            next_minute = self._minutes[minute]
            if next_minute == minute:
                next_second = self._seconds[second]
                if next_second >= 0:
                    return hour, minute, next_second
                next_minute = self._minutes[minute + 1]
            if next_minute >= 0:
                return hour, next_minute, self._first_second
            next_hour = self._hours[hour + 1]
        if next_hour >= 0:
            return next_hour, self._first_minute, self._first_second
        return None


# --------------------------------------------------------------------------------------------------
# Wall time <-> instant
#
# Wall times travel as (year, month, day, hour, minute, second) tuples: building datetimes and calling
# datetime.replace() dominate the cost otherwise. "Naive UTC" datetimes are instants without a tzinfo.


def _wall_of(moment: datetime) -> _Wall:
    return moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second


def _after_wall(wall: _Wall) -> _Wall:
    """Where to search for the wall times strictly after ``wall``."""
    return wall[0], wall[1], wall[2], wall[3], wall[4], wall[5] + 1


def _offset(zone: ZoneInfo, wall: datetime) -> timedelta:
    return zone.utcoffset(wall) or _ZERO  # a ZoneInfo always returns an offset; `or` narrows the type


def _offsets(zone: ZoneInfo, wall: _Wall) -> tuple[timedelta, timedelta]:
    """The offsets for the first and the second occurrence of ``wall``.

    Equal: an ordinary time. First > second: a repeated time (clocks went back). First < second: a
    nonexistent time (clocks jumped forward); first is the offset before the jump.
    """
    return (
        _offset(zone, datetime(*wall)),  # noqa: DTZ001 - a wall time
        _offset(zone, datetime(*wall, fold=1)),  # noqa: DTZ001 - a wall time
    )


def _instant(wall: _Wall, offset: timedelta) -> datetime:
    return datetime(*wall, tzinfo=UTC) - offset


def _offset_at(zone: ZoneInfo, instant: datetime) -> timedelta:
    """The zone's offset at a naive-UTC instant."""
    return _offset(zone, instant.replace(tzinfo=UTC).astimezone(zone))


def _transition(zone: ZoneInfo, before: datetime, after: datetime) -> datetime:
    """The first instant in (before, after] (naive UTC) that has ``after``'s offset.

    Offsets change on whole seconds, so a binary search over whole seconds finds it.
    """
    low, high = before.replace(microsecond=0), after.replace(microsecond=0)
    target = _offset_at(zone, high)
    while high - low > _SECOND:
        middle = (low + (high - low) / 2).replace(microsecond=0)
        if _offset_at(zone, middle) == target:
            high = middle
        else:
            low = middle
    return high


class _CronSchedule(Schedule):
    """A cron spec in a zone; see the module docstring for the DST rules."""

    __slots__ = ("_every_hour", "_fields", "_never", "_zone")

    def __init__(
        self, spec: str, fields: _CronFields, zone: ZoneInfo, every_hour: bool | None = None
    ) -> None:
        """``every_hour`` forces one set of DST rules (see ``with_dst_policy``); None: the spec's own."""
        super().__init__(spec)
        self._fields = fields
        self._zone = zone
        self._every_hour = fields.every_hour if every_hour is None else every_hour
        self._never = fields.next_wall(2000, 1, 1, 0, 0, 0) is None

    def next_after(self, after: datetime) -> datetime | None:
        _require_aware(after, "after")
        if self._never:
            return None
        zone = self._zone
        local = after.astimezone(zone)
        wall = _wall_of(local)
        offset = _offset(zone, local)
        if _offset(zone, datetime(*wall, fold=1 - local.fold)) != offset:  # noqa: DTZ001 - a wall time
            return self._next_from_repeat(after, local)
        if self._every_hour:
            return self._next_every_hour(_after_wall(wall), None)
        return self._next_fixed(_after_wall(wall), after)

    def _next_from_repeat(self, after: datetime, local: datetime) -> datetime | None:
        """``after`` falls in wall times that occur twice; ``local.fold`` says which time round."""
        wall = _wall_of(local)
        first, second = _offsets(self._zone, wall)
        after_utc = datetime(*wall) - (second if local.fold else first)  # noqa: DTZ001 - naive UTC
        span = first - second
        if local.fold == 0:
            change = _transition(self._zone, after_utc, after_utc + span + _SECOND)
        else:
            change = _transition(self._zone, after_utc - span - _SECOND, after_utc)
        begin, end = _wall_of(change + second), _wall_of(change + first)  # the repeated walls: [begin, end)
        start = _after_wall(wall)
        if local.fold == 0:
            if self._every_hour:
                return self._next_in_first_pass(start, begin, end, first, second)
            return self._next_fixed(start, after)
        if self._every_hour:
            return self._next_every_hour(start, end)
        return self._next_fixed(max(start, end), after)

    def _gap(self, wall: _Wall, before: timedelta, after: timedelta) -> datetime:
        """The instant (naive UTC) at which the clocks jumped over the nonexistent ``wall``."""
        naive = datetime(*wall)  # noqa: DTZ001 - a wall time
        return _transition(self._zone, naive - after, naive - before)

    def _next_fixed(self, start: _Wall, after: datetime) -> datetime | None:
        """Hour-restricted specs: a gap fires once at its end, a repeated time only the first time."""
        fields, zone = self._fields, self._zone
        wall = fields.next_wall(*start)
        while wall is not None:
            first, second = _offsets(zone, wall)
            if first >= second:
                instant = _instant(wall, first)
            else:
                instant = self._gap(wall, first, second).replace(tzinfo=UTC)
            if instant > after:
                return instant
            wall = fields.next_wall(*_after_wall(wall))  # pragma: no cover - defensive, instants only grow
        return None

    def _next_every_hour(self, start: _Wall, repeat_end: _Wall | None) -> datetime | None:
        """Specs matching every hour: gaps are skipped, repeated times fire at both instants.

        ``repeat_end`` is the end of the repeated wall times when ``after`` is in their second pass.
        """
        fields, zone = self._fields, self._zone
        wall = fields.next_wall(*start)
        while wall is not None:
            first, second = _offsets(zone, wall)
            if first == second:
                return _instant(wall, first)
            if first > second:
                in_second_pass = repeat_end is not None and wall < repeat_end
                return _instant(wall, second if in_second_pass else first)
            change = self._gap(wall, first, second)
            wall = fields.next_wall(*_wall_of(change + second))
        return None

    def _next_in_first_pass(
        self, start: _Wall, begin: _Wall, end: _Wall, first: timedelta, second: timedelta
    ) -> datetime | None:
        """Every-hour specs with ``after`` in the first pass of the repeated wall times [begin, end): the
        rest of the first pass, then the whole second pass, then what follows."""
        fields = self._fields
        wall = fields.next_wall(*start)
        if wall is not None and wall < end:
            return _instant(wall, first)
        wall = fields.next_wall(*begin)
        if wall is not None and wall < end:
            return _instant(wall, second)
        return self._next_every_hour(end, None)


# --------------------------------------------------------------------------------------------------
# Parsing


def _job_hash(job_name: str) -> int:
    return sum(ord(c) for c in job_name)


def _compile_cron(tokens: list[str], job_name: str) -> _CronFields:
    if len(tokens) == 5:
        tokens = ["0", *tokens]
    elif len(tokens) != 6:
        raise ScheduleError(f"expected exactly 5 or 6 fields, found {len(tokens)}: [{' '.join(tokens)}]")
    if any("~" in token for token in tokens):
        h = _job_hash(job_name)
        tokens = [
            token.replace("~", str(h % field.hash_mod + field.hash_add))
            for token, field in zip(tokens, _FIELDS, strict=True)
        ]
    parsed = [_field_values(token, field) for token, field in zip(tokens, _FIELDS, strict=True)]
    sets = [values for values, _ in parsed]
    return _CronFields(sets, dom_star=parsed[3][1], dow_star=parsed[5][1])


_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)


def _parse_rfc3339(text: str) -> datetime:
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ScheduleError(f"invalid RFC3339 date {text!r}")
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    try:
        if zulu:
            tz = UTC
        else:
            offset = timedelta(hours=int(off_h), minutes=int(off_m))
            if int(off_h) > 23 or int(off_m) > 59:
                raise ValueError("offset out of range")
            tz = timezone(-offset if sign == "-" else offset)
        micro = int((fraction or "").ljust(6, "0")[:6])
        parsed = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micro, tzinfo=tz
        )
    except ValueError as exc:
        raise ScheduleError(f"invalid RFC3339 date {text!r}: {exc}") from exc
    return parsed.astimezone(UTC)


def _every_interval(text: str) -> timedelta:
    try:
        duration = parse_go_duration(text)
    except ValueError as exc:
        raise ScheduleError(f"@every: {exc}") from exc
    # below a microsecond ("1ns") the timedelta is 0, so the sign and digits of the text decide
    positive = duration > timedelta(0) or (not text.startswith("-") and any(c in "123456789" for c in text))
    if not positive:
        raise ScheduleError(f"@every needs a positive duration, got {text!r}")
    return max(_SECOND, timedelta(seconds=duration // _SECOND))


def _after_instant(args: list[str], anchor: datetime) -> datetime | None:
    if len(args) != 2:
        raise ScheduleError(
            "@after needs a date and a grace duration, e.g. @after 2024-01-01T09:00:00Z <PT30M"
        )
    when = _parse_rfc3339(args[0])
    if not args[1].startswith("<"):
        raise ScheduleError(f"@after grace duration must start with '<', got {args[1]!r}")
    try:
        grace = parse_iso_duration(args[1][1:])
    except ValueError as exc:
        raise ScheduleError(f"@after: {exc}") from exc
    if grace <= timedelta(0):
        raise ScheduleError(f"@after grace duration must be positive, got {args[1][1:]!r}")
    if anchor <= when:
        return when
    if anchor <= when + grace:
        return anchor.astimezone(UTC)
    return None


def _one_argument(name: str, args: list[str], example: str) -> str:
    if len(args) != 1:
        raise ScheduleError(f"{name} takes exactly one argument, e.g. {name} {example}")
    return args[0]


def _parse_descriptor(spec: str, tokens: list[str], zone: ZoneInfo, anchor: datetime) -> Schedule:
    name, args = tokens[0].lower(), tokens[1:]
    if name in _DESCRIPTORS or name == "@manually":
        if args:
            raise ScheduleError(f"{name} takes no arguments, found {' '.join(args)!r}")
        if name == "@manually":
            return _ManualSchedule(spec)
        return _CronSchedule(spec, _compile_cron(_DESCRIPTORS[name].split(), ""), zone)
    if name == "@every":
        return _EverySchedule(spec, _every_interval(_one_argument(name, args, "1h30m")), anchor)
    if name == "@at":
        return _OnceSchedule(spec, _parse_rfc3339(_one_argument(name, args, "2024-01-01T09:00:00Z")))
    if name == "@after":
        return _OnceSchedule(spec, _after_instant(args, anchor))
    raise ScheduleError(f"unrecognized descriptor: {tokens[0]}")


DST_GAP_POLICIES = ("run_at_transition", "skip")
DST_OVERLAP_POLICIES = ("once", "twice")


class _DstCombined(Schedule):
    """The DST rule pairs no single mode gives: (run_at_transition, twice) is the union of the fires of
    both modes, (skip, once) their intersection (the modes differ only at DST transitions)."""

    __slots__ = ("_fixed", "_hourly", "_union")

    def __init__(self, spec: str, fixed: Schedule, hourly: Schedule, union: bool) -> None:
        super().__init__(spec)
        self._fixed, self._hourly, self._union = fixed, hourly, union

    def next_after(self, after: datetime) -> datetime | None:
        a, b = self._fixed.next_after(after), self._hourly.next_after(after)
        if self._union:
            return min((t for t in (a, b) if t is not None), default=None)
        while a is not None and b is not None and a != b:
            if a < b:
                a = self._fixed.next_after(a)
            else:
                b = self._hourly.next_after(b)
        return a if a == b else None


def with_dst_policy(schedule: Schedule, gap: str = "", overlap: str = "") -> Schedule:
    """Apply a job's `dst_policy` to a cron schedule ("" keeps the spec's own rule for that case)."""
    if not isinstance(schedule, _CronSchedule) or (not gap and not overlap):
        return schedule
    own = schedule._every_hour
    gap_skip = gap == "skip" if gap else own
    overlap_twice = overlap == "twice" if overlap else own
    fixed = _CronSchedule(schedule.spec, schedule._fields, schedule._zone, every_hour=False)
    hourly = _CronSchedule(schedule.spec, schedule._fields, schedule._zone, every_hour=True)
    if gap_skip == overlap_twice:
        return hourly if gap_skip else fixed
    return _DstCombined(schedule.spec, fixed, hourly, union=overlap_twice)


def parse_schedule(
    spec: str,
    *,
    job_name: str,
    timezone: str = "",
    anchor: datetime,
    dst_gap: str = "",
    dst_overlap: str = "",
) -> Schedule:
    """Parse a job's schedule.

    ``timezone`` is the job's IANA zone (an unknown one raises TimezoneError); a ``TZ=``/``CRON_TZ=``
    prefix overrides it. ``anchor`` (aware) is when the schedule was defined: ``@every`` counts from it
    and ``@after`` compares it with its date. ``dst_gap``/``dst_overlap`` override the DST rules of a
    cron spec (``with_dst_policy``). Everything else wrong raises ScheduleError.
    """
    try:
        return with_dst_policy(_parse(spec, job_name, timezone, anchor), dst_gap, dst_overlap)
    except OverflowError:  # a date or duration beyond what a datetime holds: the user's mistake, not ours
        raise ScheduleError(
            f"{spec!r} reaches beyond the year 9999; use a shorter duration or an earlier date"
        ) from None


def _parse(spec: str, job_name: str, timezone: str, anchor: datetime) -> Schedule:
    _require_aware(anchor, "anchor")
    zone = validate_timezone(timezone)
    tokens = _go_fields(spec)
    if not tokens:
        raise ScheduleError("empty spec string")
    if spec.startswith(("TZ=", "CRON_TZ=")):  # as robfig: the zone name ends at the first space
        prefix, _, rest = spec.partition(" ")
        try:
            zone = validate_timezone(prefix.partition("=")[2])
        except TimezoneError as exc:
            raise ScheduleError(str(exc)) from exc
        tokens = _go_fields(rest)
        if not tokens:
            raise ScheduleError(f"missing schedule after {prefix}")
    if tokens[0].startswith("@"):
        return _parse_descriptor(spec, tokens, zone, anchor)
    return _CronSchedule(spec, _compile_cron(tokens, job_name), zone)


def next_fire_times(schedule: Schedule, after: datetime, count: int) -> list[datetime]:
    """The next ``count`` fire instants strictly after ``after`` (fewer if the schedule ends)."""
    fires: list[datetime] = []
    moment = after
    while len(fires) < count:
        fire = schedule.next_after(moment)
        if fire is None:
            break
        fires.append(fire)
        moment = fire
    return fires
