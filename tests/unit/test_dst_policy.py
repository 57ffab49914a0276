"""dst_policy: run at the transition or skip in a spring-forward gap; once or twice in a fall-back overlap."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dkron_nats.schedule import next_fire_times, parse_schedule


def _fires(spec: str, zone: str, after: str, count: int, gap: str = "", overlap: str = "") -> list[str]:
    start = datetime.fromisoformat(after).replace(tzinfo=UTC)
    schedule = parse_schedule(
        spec, job_name="j", timezone=zone, anchor=start, dst_gap=gap, dst_overlap=overlap
    )
    return [f.strftime("%m-%d %H:%M") for f in next_fire_times(schedule, start, count)]


# (zone, the day before the spring-forward gap, the UTC fires of a daily 02:30 job with each gap policy)
SPRING = [
    ("America/New_York", "2027-03-13T12:00", "run_at_transition", ["03-14 07:00", "03-15 06:30"]),
    ("America/New_York", "2027-03-13T12:00", "skip", ["03-15 06:30", "03-16 06:30"]),
    ("Europe/Berlin", "2027-03-27T12:00", "run_at_transition", ["03-28 01:00", "03-29 00:30"]),
    ("Europe/Berlin", "2027-03-27T12:00", "skip", ["03-29 00:30", "03-30 00:30"]),
]

# (zone, spec at a repeated wall time, the day before the fall-back overlap, overlap policy, UTC fires)
FALL = [
    ("America/New_York", "0 30 1 * * *", "2027-11-06T12:00", "once", ["11-07 05:30", "11-08 06:30"]),
    (
        "America/New_York",
        "0 30 1 * * *",
        "2027-11-06T12:00",
        "twice",
        ["11-07 05:30", "11-07 06:30", "11-08 06:30"],
    ),
    ("Europe/Berlin", "0 30 2 * * *", "2027-10-30T12:00", "once", ["10-31 00:30", "11-01 01:30"]),
    (
        "Europe/Berlin",
        "0 30 2 * * *",
        "2027-10-30T12:00",
        "twice",
        ["10-31 00:30", "10-31 01:30", "11-01 01:30"],
    ),
]


@pytest.mark.parametrize(("zone", "after", "gap", "expected"), SPRING)
@pytest.mark.parametrize("overlap", ["", "once", "twice"])
def test_gap_policy_for_a_fixed_time_job(
    zone: str, after: str, gap: str, expected: list[str], overlap: str
) -> None:
    assert _fires("0 30 2 * * *", zone, after, len(expected), gap=gap, overlap=overlap) == expected


@pytest.mark.parametrize(("zone", "spec", "after", "overlap", "expected"), FALL)
@pytest.mark.parametrize("gap", ["", "run_at_transition", "skip"])
def test_overlap_policy_for_a_fixed_time_job(
    zone: str, spec: str, after: str, overlap: str, expected: list[str], gap: str
) -> None:
    assert _fires(spec, zone, after, len(expected), gap=gap, overlap=overlap) == expected


def test_an_hourly_job_can_ask_for_the_transition_and_a_single_run() -> None:
    # By default an every-hour spec skips the gap and runs both 01:30s; the policy can say otherwise.
    ny = "America/New_York"
    assert _fires("0 30 * * * *", ny, "2027-03-14T05:00", 3) == ["03-14 05:30", "03-14 06:30", "03-14 07:30"]
    assert _fires("0 30 * * * *", ny, "2027-03-14T05:00", 3, gap="run_at_transition") == [
        "03-14 05:30",
        "03-14 06:30",
        "03-14 07:00",
    ]
    assert _fires("0 30 * * * *", ny, "2027-11-07T04:00", 3) == ["11-07 04:30", "11-07 05:30", "11-07 06:30"]
    assert _fires("0 30 * * * *", ny, "2027-11-07T04:00", 3, overlap="once") == [
        "11-07 04:30",
        "11-07 05:30",
        "11-07 07:30",
    ]


def test_the_default_is_unchanged() -> None:
    # A fixed-time job: at the transition, once (as Vixie cron does).
    assert _fires("0 30 2 * * *", "America/New_York", "2027-03-13T12:00", 1) == ["03-14 07:00"]
    assert _fires("0 30 1 * * *", "America/New_York", "2027-11-06T12:00", 2) == ["11-07 05:30", "11-08 06:30"]
