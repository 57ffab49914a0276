"""`next`: the real next fire time of a job in its own zone, computed from its schedule and memoised."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from dkron_nats.models import DstPolicy, JobSpec
from dkron_nats.schedule import Schedule, ScheduleError, parse_schedule
from dkron_nats.timefmt import utcnow


def job_schedule(spec: JobSpec, now: datetime) -> Schedule:
    """A job's schedule as the scheduler fires it: its zone, its anchor and its DST policy."""
    dst = spec.dst_policy or DstPolicy()
    return parse_schedule(
        spec.schedule,
        job_name=spec.name,
        timezone=spec.timezone,
        anchor=spec.anchor or now,
        dst_gap=dst.gap,
        dst_overlap=dst.overlap,
    )


def compute_next(spec: JobSpec, now: datetime) -> datetime | None:
    try:
        fires = upcoming(spec, now, 1)
    except (ScheduleError, ValueError):
        return None
    return fires[0] if fires else None


def upcoming(spec: JobSpec, now: datetime, count: int) -> list[datetime]:
    """The job's next `count` fire instants after `now`, as the scheduler will fire them.

    Raises ScheduleError (or ValueError for a bad zone) when the schedule does not parse.
    """
    if spec.disabled or spec.parent_job or not spec.schedule:
        return []
    schedule = job_schedule(spec, now)
    after = now
    if spec.anchor is not None and spec.anchor > after:
        after = spec.anchor
    if spec.starts_at is not None and spec.starts_at > after:
        after = spec.starts_at - timedelta(microseconds=1)
    fires: list[datetime] = []
    while len(fires) < count:
        fire = schedule.next_after(after)
        if fire is None or (spec.expires_at is not None and fire > spec.expires_at):
            break
        fires.append(fire)
        after = fire
    return fires


class NextFireCache:
    """Remembers each job's next fire time until it passes or the job changes."""

    def __init__(self, clock: Callable[[], datetime] = utcnow) -> None:
        self.clock = clock
        self._memo: dict[str, tuple[JobSpec, datetime | None]] = {}

    def get(self, spec: JobSpec) -> datetime | None:
        now = self.clock()
        memo = self._memo.get(spec.name)
        if memo is not None and memo[0] is spec and (memo[1] is None or memo[1] > now):
            return memo[1]
        value = compute_next(spec, now)
        self._memo[spec.name] = (spec, value)
        return value

    def forget(self, name: str) -> None:
        self._memo.pop(name, None)
