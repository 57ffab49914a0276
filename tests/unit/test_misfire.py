"""Which overdue slots each misfire policy runs, and the reason recorded for the others."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dkron_nats.misfire import MisfireRule

T = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
S = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)


def _slots(*seconds: int) -> list[datetime]:
    return [T + n * S for n in seconds]


@pytest.mark.parametrize(
    ("policy", "now", "expected"),
    [
        # After downtime: skip runs nothing, run_once the latest, run_all every one (capped at 3).
        ("skip", T + 12 * S, []),
        ("run_once", T + 12 * S, [10]),
        ("run_all", T + 12 * S, [8, 9, 10]),
    ],
)
def test_which_overdue_slots_run(policy: str, now: datetime, expected: list[int]) -> None:
    rule = MisfireRule(policy, MINUTE, misfire_max=3)
    assert rule.to_launch(_slots(5, 6, 7, 8, 9, 10), now) == _slots(*expected)


@pytest.mark.parametrize("policy", ["skip", "run_once", "run_all"])
@pytest.mark.parametrize("late", [timedelta(0), timedelta(milliseconds=500)])
def test_a_slot_resolved_on_time_runs_under_every_policy(policy: str, late: timedelta) -> None:
    rule = MisfireRule(policy, MINUTE, misfire_max=3)
    assert rule.to_launch(_slots(10), T + 10 * S + late) == _slots(10)


@pytest.mark.parametrize("policy", ["skip", "run_once", "run_all"])
def test_slots_older_than_the_starting_deadline_never_run(policy: str) -> None:
    rule = MisfireRule(policy, timedelta(seconds=3), misfire_max=10)
    launched = rule.to_launch(_slots(1, 2, 3, 4, 5, 6), T + 8 * S)
    assert all(T + 8 * S - slot <= timedelta(seconds=3) for slot in launched)
    assert rule.why_missed(T + 1 * S, T + 8 * S).startswith("missed: the slot was not launched within")


def test_a_deadline_shorter_than_on_time_bounds_skip_too() -> None:
    rule = MisfireRule("skip", timedelta(milliseconds=200), misfire_max=10)
    assert rule.to_launch(_slots(10), T + 10.5 * S) == []


@pytest.mark.parametrize(
    ("policy", "reason"),
    [
        ("skip", "misfire_policy is skip"),
        ("run_once", "misfire_policy is run_once"),
        ("run_all", "misfire_max of 3"),
    ],
)
def test_missed_reason_names_the_policy(policy: str, reason: str) -> None:
    assert reason in MisfireRule(policy, MINUTE, 3).why_missed(T, T + 5 * S)
