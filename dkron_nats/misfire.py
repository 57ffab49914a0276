"""Misfire policy: which overdue slots of a job still run after downtime, a leader takeover or a pause.

A slot is overdue when the scheduler resolves it later than it fell due. Slots older than the job's
starting deadline never run. Of the others, `skip` runs none that is more than ON_TIME late, `run_once`
runs the latest, and `run_all` runs each of them, oldest first, at most `misfire_max`. Every slot that does
not run is recorded as missed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

MISFIRE_POLICIES = ("skip", "run_once", "run_all")
DEFAULT_POLICY = "run_once"
DEFAULT_MISFIRE_MAX = 10
ON_TIME = timedelta(seconds=1)
"""How late a slot may be resolved and still count as on time (scheduler jitter under load)."""


@dataclass(frozen=True, slots=True)
class MisfireRule:
    policy: str
    starting_deadline: timedelta
    misfire_max: int

    def to_launch(self, slots: list[datetime], now: datetime) -> list[datetime]:
        """The due slots (ascending) that run, oldest first; every other one is missed."""
        eligible = [s for s in slots if now - s <= self.starting_deadline]
        if self.policy == "skip":
            return [s for s in eligible[-1:] if now - s <= min(ON_TIME, self.starting_deadline)]
        if self.policy == "run_all":
            return eligible[-self.misfire_max :]
        return eligible[-1:]

    def why_missed(self, slot: datetime, decided: datetime) -> str:
        if decided - slot > self.starting_deadline:
            seconds = self.starting_deadline.total_seconds()
            return f"missed: the slot was not launched within the starting deadline of {seconds:g}s"
        if self.policy == "skip":
            return "missed: the slot was not launched on time and the job's misfire_policy is skip"
        if self.policy == "run_all":
            return f"missed: more overdue slots than the job's misfire_max of {self.misfire_max}"
        return "missed: a later overdue slot ran instead (the job's misfire_policy is run_once)"
