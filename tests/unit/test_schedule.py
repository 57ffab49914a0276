"""Schedule syntax and evaluation: every form, its errors, and both DST transitions in several zones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

from dkron_nats.schedule import (
    Schedule,
    ScheduleError,
    TimezoneError,
    next_fire_times,
    parse_schedule,
    validate_timezone,
)

ANCHOR = datetime(2024, 1, 1, tzinfo=UTC)
PREFIX = "can't parse job schedule: "


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def parse(spec: str, tz: str = "", *, name: str = "job", anchor: datetime = ANCHOR) -> Schedule:
    return parse_schedule(spec, job_name=name, timezone=tz, anchor=anchor)


def fires(spec: str, after: datetime, count: int, tz: str = "", *, name: str = "job") -> list[datetime]:
    return next_fire_times(parse(spec, tz, name=name), after, count)


# --------------------------------------------------------------------------------------------------
# Cron fields


def test_six_fields_with_seconds() -> None:
    assert fires("15 30 12 * * *", utc(2024, 5, 1), 2) == [
        utc(2024, 5, 1, 12, 30, 15),
        utc(2024, 5, 2, 12, 30, 15),
    ]


def test_five_fields_mean_second_zero() -> None:
    assert fires("30 12 * * *", utc(2024, 5, 1), 2) == [utc(2024, 5, 1, 12, 30), utc(2024, 5, 2, 12, 30)]
    assert fires("*/20 * * * *", utc(2024, 5, 1, 0, 0, 1), 2) == [
        utc(2024, 5, 1, 0, 20),
        utc(2024, 5, 1, 0, 40),
    ]


def test_lists_ranges_and_steps() -> None:
    after = utc(2024, 5, 1)
    assert fires("0 5,10,50 0 * * *", after, 3) == [utc(2024, 5, 1, 0, m) for m in (5, 10, 50)]
    assert fires("0 0 9-11 * * *", after, 3) == [utc(2024, 5, 1, h) for h in (9, 10, 11)]
    assert fires("*/15 0 0 * * *", after, 3) == [utc(2024, 5, 1, 0, 0, s) for s in (15, 30, 45)]
    assert fires("0 10-30/10 0 * * *", after, 4) == [
        utc(2024, 5, 1, 0, 10),
        utc(2024, 5, 1, 0, 20),
        utc(2024, 5, 1, 0, 30),
        utc(2024, 5, 2, 0, 10),
    ]
    # a/n means a-max/n
    assert fires("0 45/5 0 * * *", after, 4) == [utc(2024, 5, 1, 0, m) for m in (45, 50, 55)] + [
        utc(2024, 5, 2, 0, 45)
    ]
    assert fires("0 0 0 1,15-16 * *", after, 3) == [utc(2024, 5, 15), utc(2024, 5, 16), utc(2024, 6, 1)]


def test_month_and_day_names_are_case_insensitive() -> None:
    # 2024-05-01 is a Wednesday
    assert fires("0 0 0 * * mon-Wed", utc(2024, 5, 1), 3) == [
        utc(2024, 5, 6),
        utc(2024, 5, 7),
        utc(2024, 5, 8),
    ]
    assert fires("0 0 0 1 jan,JUL-aug *", utc(2024, 5, 1), 3) == [
        utc(2024, 7, 1),
        utc(2024, 8, 1),
        utc(2025, 1, 1),
    ]
    assert fires("0 0 0 * * SAT,sun", utc(2024, 5, 1), 2) == [utc(2024, 5, 4), utc(2024, 5, 5)]


def test_day_of_week_seven_is_sunday_as_in_earlier_versions() -> None:
    assert fires("0 0 0 * * 7", utc(2024, 5, 1), 1) == [utc(2024, 5, 5)]
    assert fires("0 0 0 * * SUN-7", utc(2024, 5, 1), 7) == [utc(2024, 5, d) for d in range(2, 9)]
    with pytest.raises(ScheduleError, match=r"day-of-week value 8 out of range 0-7"):
        parse("0 0 0 * * 8")
    assert fires("0 0 0 * * */2", utc(2024, 5, 1), 3) == [utc(2024, 5, 2), utc(2024, 5, 4), utc(2024, 5, 5)]


def test_question_mark_is_a_wildcard_in_every_field() -> None:
    assert fires("0 0 0 ? * MON", utc(2024, 5, 1), 2) == [utc(2024, 5, 6), utc(2024, 5, 13)]
    assert fires("0 0 0 10 * ?", utc(2024, 5, 1), 2) == [utc(2024, 5, 10), utc(2024, 6, 10)]
    assert fires("? ? ? ? ? ?", utc(2024, 5, 1), 2) == [utc(2024, 5, 1, 0, 0, 1), utc(2024, 5, 1, 0, 0, 2)]
    assert fires("0 ?/20 0 * * *", utc(2024, 5, 1), 2) == [utc(2024, 5, 1, 0, 20), utc(2024, 5, 1, 0, 40)]


def test_robfig_quirks_are_accepted_as_dkron_accepts_them() -> None:
    after = utc(2024, 5, 1)  # a Wednesday
    # empty list items are skipped; a '-' after '*' or '?' is ignored; numbers may have a sign or zeros
    assert fires("0 0 0 1,,15, * *", after, 2) == [utc(2024, 5, 15), utc(2024, 6, 1)]
    assert fires("0 0 *-5 * * *", after, 2) == [utc(2024, 5, 1, 1), utc(2024, 5, 1, 2)]
    assert fires("0 0 +05 * * *", after, 1) == [utc(2024, 5, 1, 5)]
    assert fires("0 0 0 * * FR\u0130", after, 1) == [utc(2024, 5, 3)]  # Go lower-cases İ to i
    # a field of commas alone has no values: a day field never matches by itself, a time field never fires
    assert fires("0 0 0 , * MON", after, 2) == [utc(2024, 5, 6), utc(2024, 5, 13)]
    assert parse("0 0 0 , * *").next_after(after) is None
    assert parse(", * * * * *").next_after(after) is None


def test_day_of_month_or_day_of_week_when_both_restricted() -> None:
    # the 13th, or any Friday
    assert fires("0 0 0 13 * FRI", utc(2024, 9, 1), 4) == [
        utc(2024, 9, 6),
        utc(2024, 9, 13),
        utc(2024, 9, 20),
        utc(2024, 9, 27),
    ]
    assert fires("0 0 0 13 * FRI", utc(2024, 10, 1), 2) == [utc(2024, 10, 4), utc(2024, 10, 11)]
    assert fires("0 0 0 13 * FRI", utc(2024, 10, 11), 2) == [utc(2024, 10, 13), utc(2024, 10, 18)]


def test_day_of_month_and_day_of_week_when_one_is_a_wildcard() -> None:
    assert fires("0 0 0 * * FRI", utc(2024, 9, 1), 2) == [utc(2024, 9, 6), utc(2024, 9, 13)]
    # as in robfig, '*' or '?' with a step of 1 anywhere in the list leaves the field unrestricted
    assert fires("0 0 0 */1 * FRI", utc(2024, 9, 1), 2) == [utc(2024, 9, 6), utc(2024, 9, 13)]
    assert fires("0 0 0 5,? * FRI", utc(2024, 9, 1), 2) == [utc(2024, 9, 6), utc(2024, 9, 13)]
    assert fires("0 0 0 13 * *,FRI", utc(2024, 9, 1), 2) == [utc(2024, 9, 13), utc(2024, 10, 13)]


def test_a_step_above_one_restricts_the_field() -> None:
    # robfig (Dkron): */2 is restricted, so a day matches if it is odd or a Friday (issue 18)
    assert fires("0 0 0 */2 * FRI", utc(2024, 9, 1), 4) == [
        utc(2024, 9, 3),
        utc(2024, 9, 5),
        utc(2024, 9, 6),
        utc(2024, 9, 7),
    ]
    # a full range is restricted too: every day matches
    assert fires("0 0 0 1-31 * FRI", utc(2024, 9, 1), 2) == [utc(2024, 9, 2), utc(2024, 9, 3)]


def test_leap_day_and_never_matching_specs() -> None:
    # like robfig, the search ends with the fifth year after the year of the next second
    assert fires("0 0 0 29 2 *", utc(2096, 3, 1), 1) == []  # 2100 is no leap year; 2104 is too far
    assert fires("0 0 0 29 2 *", utc(2098, 12, 31, 23, 59, 58), 1) == []
    assert fires("0 0 0 29 2 *", utc(2098, 12, 31, 23, 59, 59), 1) == [utc(2104, 2, 29)]
    assert parse("0 0 0 30 2 *").next_after(utc(2024, 1, 1)) is None
    assert parse("0 0 0 31 4,6,9,11 *").fires_between(utc(2024, 1, 1), utc(2030, 1, 1), 5) == []


def test_next_after_is_strict_and_ignores_sub_seconds() -> None:
    schedule = parse("* * * * * *")
    assert schedule.next_after(utc(2024, 5, 1, 12)) == utc(2024, 5, 1, 12, 0, 1)
    assert schedule.next_after(utc(2024, 5, 1, 12) + timedelta(microseconds=500_000)) == utc(
        2024, 5, 1, 12, 0, 1
    )
    assert fires("0 0 12 * * *", utc(2024, 5, 1, 12), 1) == [utc(2024, 5, 2, 12)]


def test_results_are_utc_whatever_the_zone_of_after() -> None:
    tokyo = timezone(timedelta(hours=9))
    fire = parse("0 0 12 * * *").next_after(datetime(2024, 5, 1, 20, 0, tzinfo=tokyo))
    assert fire == utc(2024, 5, 1, 12)
    assert fire is not None
    assert fire.tzinfo is UTC


@pytest.mark.parametrize(
    "spec",
    [
        "0 0 12 * * *",
        "*/7 5-40/3 */5 * * *",
        "0 0 0 1,15 * *",
        "30 15 10 * 1-3,11 MON-FRI",
        "0 0 0 13 * 5",
        "0 */10 * * * SUN",
        "0 0 6 28-31 * *",
        "59 59 23 31 12 *",
        "0 0 0 * FEB 0",
        "1-5 1 1 * * *",
    ],
)
def test_cron_agrees_with_croniter_in_utc(spec: str) -> None:
    start = utc(2023, 12, 30, 23, 59, 59)
    reference = croniter(spec, start, ret_type=datetime, second_at_beginning=True)
    expected = [reference.get_next(datetime) for _ in range(40)]
    assert fires(spec, start, 40) == expected


# --------------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "   ",
        "0 0 * *",
        "0 0 0 * * * *",
        "61 * * * * *",
        "* 60 * * * *",
        "* * 24 * * *",
        "* * * 0 * *",
        "* * * 32 * *",
        "* * * * 0 *",
        "* * * * 13 *",
        "*/0 * * * * *",
        "*/x * * * * *",
        "1/2/3 * * * * *",
        "30-10 * * * * *",
        "-5 * * * * *",
        "5- * * * * *",
        "abc * * * * *",
        "* * * * * 8",
        "*/2-3 * * * * *",
        "1-2-3 * * * * *",
        "*/9223372036854775808 * * * * *",
        "+-5 * * * * *",
        "1_0 * * * * *",
        " TZ=UTC 0 0 0 * * *",
        "TZ=UTC\t0 0 0 * * *",
        "* * * * MON *",
        "* * * * * JAN",
        "* * * * * MONDAY",
        "\u0661 * * * * *",  # a non-ASCII digit
        "@every",
        "@every 0s",
        "@every 0",
        "@every -1m",
        "@every 30",
        "@every 1h 30m",
        "@every soon",
        "@at",
        "@at tomorrow",
        "@at 2024-02-30T00:00:00Z",
        "@at 2024-01-01T00:00:00",
        "@at 2024-01-01 00:00:00Z",
        "@at 2024-01-01T00:00:00+25:00",
        "@at 2024-01-01T00:00:00Z 2024-01-02T00:00:00Z",
        "@after 2024-01-01T09:00:00Z",
        "@after 2024-01-01T09:00:00Z PT30M",
        "@after 2024-01-01T09:00:00Z <30m",
        "@after 2024-01-01T09:00:00Z <PT0S",
        "@after 2024-01-01T09:00:00Z <P",
        "@after 2024-01-01T09:00:00Z <PT30M extra",
        "@after yesterday <PT30M",
        "@daily 3",
        "@manually now",
        "@fortnightly",
        "TZ=Mars/Olympus 0 0 * * * *",
        "CRON_TZ=Nowhere @daily",
        "TZ=Europe/Berlin",
        "CRON_TZ=UTC  ",
    ],
)
def test_invalid_specs_raise_schedule_error(spec: str) -> None:
    with pytest.raises(ScheduleError) as info:
        parse(spec)
    assert str(info.value).startswith(PREFIX)
    assert len(str(info.value)) > len(PREFIX)


def test_error_messages_are_readable() -> None:
    with pytest.raises(ScheduleError, match=r"^can't parse job schedule: .*found 4: \[0 0 \* \*\]$"):
        parse("0 0 * *")
    with pytest.raises(ScheduleError, match="second value 61 out of range 0-59"):
        parse("61 * * * * *")
    with pytest.raises(ScheduleError, match="unrecognized descriptor: @fortnightly"):
        parse("@fortnightly")
    with pytest.raises(ScheduleError, match="unknown time zone Mars/Olympus"):
        parse("TZ=Mars/Olympus @daily")


def test_timezones() -> None:
    assert validate_timezone("") == ZoneInfo("UTC")
    assert validate_timezone("UTC") == ZoneInfo("UTC")
    assert validate_timezone("Local") == ZoneInfo("UTC")
    assert validate_timezone("Europe/Berlin") == ZoneInfo("Europe/Berlin")
    for bad in ("Mars/Olympus", "America", "../etc/passwd", "/etc/localtime", "Europe/Berlin "):
        with pytest.raises(TimezoneError, match=f"^unknown time zone {bad}$"):
            validate_timezone(bad)


def test_unknown_job_timezone_raises_timezone_error() -> None:
    with pytest.raises(TimezoneError, match="unknown time zone Mars/Olympus"):
        parse("@daily", "Mars/Olympus")


def test_naive_datetimes_are_refused() -> None:
    naive = datetime(2024, 1, 1)  # noqa: DTZ001 - the point of the test
    with pytest.raises(ValueError, match="timezone-aware"):
        parse("@daily", anchor=naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        parse("@daily").next_after(naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        parse("@every 1m").fires_between(naive, utc(2024, 1, 2), 3)


# --------------------------------------------------------------------------------------------------
# Hash, zones, descriptors


def test_hash_test_vector_from_dkron() -> None:
    assert fires("0 0 ~ * * *", utc(2024, 5, 1), 2, name="test_job") == [
        utc(2024, 5, 1, 18),
        utc(2024, 5, 2, 18),
    ]


def test_hash_in_every_field() -> None:
    # H("test_job") = 858: sec/min 18, hour 18, dom 19, month 7, dow 4 (Thursday)
    hashed = fires("~ ~ ~ ~ ~ ~", utc(2024, 1, 1), 10, name="test_job")
    assert hashed == fires("18 18 18 19 7 4", utc(2024, 1, 1), 10)
    assert fires("0 ~/15 3 * * *", utc(2024, 5, 1), 3, name="test_job") == [
        utc(2024, 5, 1, 3, 18),
        utc(2024, 5, 1, 3, 33),
        utc(2024, 5, 1, 3, 48),
    ]
    # five fields: the first one is minutes
    assert fires("~ ~ * * *", utc(2024, 5, 1), 1, name="test_job") == [utc(2024, 5, 1, 18, 18)]
    assert fires("0 0 ~ * * *", utc(2024, 5, 1), 1, name="") == [utc(2024, 5, 2)]
    assert fires("0 0 ~ * * *", utc(2024, 5, 1), 1, name="é") == [utc(2024, 5, 1, 233 % 24)]


def test_tz_prefixes_override_the_job_timezone() -> None:
    assert fires("TZ=Asia/Tokyo 0 0 9 * * *", utc(2024, 5, 1), 1, "America/New_York") == [utc(2024, 5, 2)]
    assert fires("CRON_TZ=Asia/Tokyo 0 9 * * *", utc(2024, 5, 1), 1) == [utc(2024, 5, 2)]
    assert fires("CRON_TZ=Europe/Paris @daily", utc(2024, 1, 10), 1, "Asia/Tokyo") == [utc(2024, 1, 10, 23)]
    assert fires("TZ=UTC @daily", utc(2024, 1, 10), 1, "Asia/Tokyo") == [utc(2024, 1, 11)]
    assert fires("TZ=Europe/Paris @every 1h", utc(2024, 1, 1), 1) == [utc(2024, 1, 1, 1)]


def test_job_timezone_applies_to_cron_specs() -> None:
    assert fires("0 0 9 * * *", utc(2024, 1, 10), 1, "Europe/Berlin") == [utc(2024, 1, 10, 8)]
    assert fires("0 0 9 * * *", utc(2024, 7, 10), 1, "Europe/Berlin") == [utc(2024, 7, 10, 7)]


def test_descriptors_in_utc() -> None:
    after = utc(2024, 5, 15, 10, 20, 30)
    assert fires("@yearly", after, 1) == [utc(2025, 1, 1)]
    assert fires("@annually", after, 1) == [utc(2025, 1, 1)]
    assert fires("@monthly", after, 1) == [utc(2024, 6, 1)]
    assert fires("@weekly", after, 1) == [utc(2024, 5, 19)]  # Sunday
    assert fires("@daily", after, 1) == [utc(2024, 5, 16)]
    assert fires("@midnight", after, 1) == [utc(2024, 5, 16)]
    assert fires("@hourly", after, 1) == [utc(2024, 5, 15, 11)]
    assert fires("@minutely", after, 1) == [utc(2024, 5, 15, 10, 21)]
    assert fires("@Daily", after, 1) == [utc(2024, 5, 16)]


def test_descriptors_run_in_the_job_timezone() -> None:
    assert fires("@daily", utc(2024, 1, 10), 2, "America/New_York") == [
        utc(2024, 1, 10, 5),
        utc(2024, 1, 11, 5),
    ]
    assert fires("@daily", utc(2024, 7, 10), 1, "America/New_York") == [utc(2024, 7, 10, 4)]
    assert fires("@monthly", utc(2024, 1, 10), 1, "Europe/Berlin") == [utc(2024, 1, 31, 23)]
    assert fires("@weekly", utc(2024, 5, 15), 1, "Asia/Kolkata") == [utc(2024, 5, 18, 18, 30)]
    assert fires("@hourly", utc(2024, 5, 15, 10, 1), 1, "Asia/Kolkata") == [utc(2024, 5, 15, 10, 30)]


# --------------------------------------------------------------------------------------------------
# @every, @at, @after, @manually


def test_every_counts_from_the_anchor() -> None:
    anchor = utc(2024, 5, 1, 10, 0, 7)
    schedule = parse("@every 1h30m", anchor=anchor)
    assert schedule.next_after(utc(2024, 4, 1)) == utc(2024, 5, 1, 11, 30, 7)
    assert schedule.next_after(anchor) == utc(2024, 5, 1, 11, 30, 7)
    assert schedule.next_after(utc(2024, 5, 1, 11, 30, 7)) == utc(2024, 5, 1, 13, 0, 7)
    assert schedule.next_after(utc(2024, 5, 2)) == utc(2024, 5, 2, 1, 0, 7)
    assert not schedule.is_manual


def test_every_rounds_down_to_whole_seconds_with_a_one_second_minimum() -> None:
    assert fires("@every 1500ms", ANCHOR, 3) == [ANCHOR + timedelta(seconds=s) for s in (1, 2, 3)]
    assert fires("@every 500ms", ANCHOR, 2) == [ANCHOR + timedelta(seconds=s) for s in (1, 2)]
    assert fires("@every 1ns", ANCHOR, 1) == [ANCHOR + timedelta(seconds=1)]
    assert fires("@every 2m59.9s", ANCHOR, 1) == [ANCHOR + timedelta(seconds=179)]
    assert fires("@every 1h0.5s", ANCHOR, 1) == [ANCHOR + timedelta(hours=1)]


def test_every_is_elapsed_time_across_dst() -> None:
    anchor = utc(2024, 3, 10, 5, 30)  # 00:30 EST, the day clocks spring forward
    schedule = parse("@every 1h", "America/New_York", anchor=anchor)
    got = next_fire_times(schedule, anchor, 4)
    assert got == [anchor + timedelta(hours=k) for k in (1, 2, 3, 4)]


def test_every_fires_between_keeps_the_most_recent_slots() -> None:
    schedule = parse("@every 10m", anchor=utc(2024, 5, 1, 0, 0, 5))
    assert schedule.fires_between(utc(2024, 5, 1), utc(2024, 5, 1, 1), 3) == [
        utc(2024, 5, 1, 0, 30, 5),
        utc(2024, 5, 1, 0, 40, 5),
        utc(2024, 5, 1, 0, 50, 5),
    ]
    assert schedule.fires_between(utc(2024, 5, 1, 0, 10, 5), utc(2024, 5, 1, 0, 30, 5), 10) == [
        utc(2024, 5, 1, 0, 20, 5),
        utc(2024, 5, 1, 0, 30, 5),
    ]
    assert schedule.fires_between(utc(2024, 4, 1), utc(2024, 5, 1, 0, 10), 10) == []
    assert schedule.fires_between(utc(2024, 4, 1), utc(2024, 5, 1, 0, 10, 5), 10) == [
        utc(2024, 5, 1, 0, 10, 5)
    ]
    assert schedule.fires_between(utc(2024, 5, 1), utc(2024, 5, 2), 0) == []


def test_at_fires_once() -> None:
    schedule = parse("@at 2024-06-01T12:30:00+02:00")
    assert schedule.next_after(utc(2024, 5, 1)) == utc(2024, 6, 1, 10, 30)
    assert schedule.next_after(utc(2024, 6, 1, 10, 30)) is None
    assert schedule.next_after(utc(2024, 7, 1)) is None
    assert next_fire_times(schedule, utc(2024, 1, 1), 5) == [utc(2024, 6, 1, 10, 30)]
    assert schedule.fires_between(utc(2024, 6, 1), utc(2024, 6, 2), 5) == [utc(2024, 6, 1, 10, 30)]
    assert schedule.fires_between(utc(2024, 6, 1, 10, 30), utc(2024, 6, 2), 5) == []


def test_at_accepts_zulu_offsets_and_fractions() -> None:
    assert parse("@at 2024-06-01T12:30:00Z").next_after(ANCHOR) == utc(2024, 6, 1, 12, 30)
    assert parse("@at 2024-06-01t12:30:00z").next_after(ANCHOR) == utc(2024, 6, 1, 12, 30)
    assert parse("@at 2024-06-01T12:30:00-05:30").next_after(ANCHOR) == utc(2024, 6, 1, 18)
    fraction = parse("@at 2024-06-01T12:30:00.123456789Z").next_after(ANCHOR)
    assert fraction == utc(2024, 6, 1, 12, 30) + timedelta(microseconds=123_456)
    assert parse("@at 2024-06-01T12:30:00.5Z").next_after(ANCHOR) == utc(2024, 6, 1, 12, 30) + timedelta(
        milliseconds=500
    )


def test_after_before_its_date_fires_at_the_date() -> None:
    schedule = parse("@after 2024-01-01T09:00:00Z <PT30M", anchor=utc(2023, 12, 31))
    assert next_fire_times(schedule, utc(2023, 12, 31), 3) == [utc(2024, 1, 1, 9)]


def test_after_within_grace_fires_at_the_anchor() -> None:
    for anchor in (utc(2024, 1, 1, 9), utc(2024, 1, 1, 9, 10), utc(2024, 1, 1, 9, 30)):
        schedule = parse("@after 2024-01-01T09:00:00Z <PT30M", anchor=anchor)
        assert schedule.next_after(anchor - timedelta(microseconds=1)) == anchor
        assert schedule.next_after(anchor) is None
        assert schedule.fires_between(anchor - timedelta(seconds=1), anchor, 1) == [anchor]


def test_after_past_grace_never_fires() -> None:
    schedule = parse("@after 2024-01-01T09:00:00Z <PT30M", anchor=utc(2024, 1, 1, 9, 30, 1))
    assert schedule.next_after(utc(2020, 1, 1)) is None
    assert parse("@after 2024-01-01T09:00:00Z <P1D", anchor=utc(2024, 1, 2, 8)).next_after(ANCHOR) == utc(
        2024, 1, 2, 8
    )


def test_manually_never_fires() -> None:
    schedule = parse("@manually")
    assert schedule.is_manual
    assert schedule.next_after(ANCHOR) is None
    assert schedule.fires_between(ANCHOR, utc(2030, 1, 1), 10) == []
    assert next_fire_times(schedule, ANCHOR, 3) == []
    assert not parse("@daily").is_manual


def test_spec_keeps_the_original_text() -> None:
    for spec in ("  0 0 * * * * ", "CRON_TZ=Europe/Paris @daily", "@every 5m", "@manually"):
        assert parse(spec).spec == spec


# --------------------------------------------------------------------------------------------------
# fires_between and next_fire_times


def test_fires_between_keeps_the_most_recent_slots() -> None:
    schedule = parse("0 * * * * *")
    start, end = utc(2024, 5, 1, 12), utc(2024, 5, 1, 12, 10)
    assert schedule.fires_between(start, end, 3) == [utc(2024, 5, 1, 12, m) for m in (8, 9, 10)]
    assert schedule.fires_between(start, end, 100) == [utc(2024, 5, 1, 12, m) for m in range(1, 11)]
    assert schedule.fires_between(start, end, 0) == []
    assert schedule.fires_between(end, start, 5) == []
    assert schedule.fires_between(end, end, 5) == []


def test_fires_between_over_long_spans() -> None:
    assert parse("@yearly").fires_between(utc(1990, 6, 1), utc(2024, 6, 1), 2) == [
        utc(2023, 1, 1),
        utc(2024, 1, 1),
    ]
    every_second = parse("* * * * * *").fires_between(utc(2000, 1, 1), utc(2024, 6, 1), 3)
    assert every_second == [utc(2024, 5, 31, 23, 59, 58), utc(2024, 5, 31, 23, 59, 59), utc(2024, 6, 1)]
    sparse = parse("0 0 12 29 2 *").fires_between(utc(2000, 1, 1), utc(2024, 6, 1), 10)
    assert sparse == [utc(year, 2, 29, 12) for year in range(2000, 2025, 4)]


def test_next_fire_times() -> None:
    assert next_fire_times(parse("0 0 */6 * * *"), utc(2024, 5, 1, 1), 4) == [
        utc(2024, 5, 1, 6),
        utc(2024, 5, 1, 12),
        utc(2024, 5, 1, 18),
        utc(2024, 5, 2),
    ]
    assert next_fire_times(parse("@daily"), ANCHOR, 0) == []


# --------------------------------------------------------------------------------------------------
# Daylight saving time
#
# America/New_York 2024: 03-10 02:00 EST -> 03:00 EDT (07:00Z); 11-03 02:00 EDT -> 01:00 EST (06:00Z).
# Europe/Berlin 2024:    03-31 02:00 CET -> 03:00 CEST (01:00Z); 10-27 03:00 CEST -> 02:00 CET (01:00Z).
# Australia/Lord_Howe:   2024-04-07 02:00 +11 -> 01:30 +10:30 (04-06 15:00Z);
#                        2024-10-06 02:00 +10:30 -> 02:30 +11 (10-05 15:30Z).
# America/Santiago 2024: 09-08 00:00 -04 -> 01:00 -03 (04:00Z); 04-07 00:00 -03 -> 04-06 23:00 -04 (03:00Z).


def test_spring_forward_fixed_time_fires_once_at_the_end_of_the_gap() -> None:
    assert fires("0 30 2 * * *", utc(2024, 3, 9, 12), 3, "America/New_York") == [
        utc(2024, 3, 10, 7),  # 03:00 EDT
        utc(2024, 3, 11, 6, 30),
        utc(2024, 3, 12, 6, 30),
    ]
    assert fires("0 30 2 * * *", utc(2024, 3, 29, 12), 3, "Europe/Berlin") == [
        utc(2024, 3, 30, 1, 30),
        utc(2024, 3, 31, 1),  # 03:00 CEST
        utc(2024, 4, 1, 0, 30),
    ]


def test_spring_forward_collapses_several_missing_times_into_one_fire() -> None:
    assert fires("0 */10 2 * * *", utc(2024, 3, 30, 12), 3, "Europe/Berlin") == [
        utc(2024, 3, 31, 1),
        utc(2024, 4, 1, 0),
        utc(2024, 4, 1, 0, 10),
    ]
    # 02:00 does not exist and 03:00 does: one fire at 03:00 EDT, not two
    assert fires("0 0 2,3 * * *", utc(2024, 3, 10), 3, "America/New_York") == [
        utc(2024, 3, 10, 7),
        utc(2024, 3, 11, 6),
        utc(2024, 3, 11, 7),
    ]


def test_spring_forward_wildcard_hours_skip_missing_times() -> None:
    assert fires("0 0 * * * *", utc(2024, 3, 10, 5), 3, "America/New_York") == [
        utc(2024, 3, 10, 6),  # 01:00 EST
        utc(2024, 3, 10, 7),  # 03:00 EDT
        utc(2024, 3, 10, 8),
    ]
    assert fires("0 * * * * *", utc(2024, 3, 10, 6, 58), 3, "America/New_York") == [
        utc(2024, 3, 10, 6, 59),
        utc(2024, 3, 10, 7),
        utc(2024, 3, 10, 7, 1),
    ]
    assert fires("0 */30 * * * *", utc(2024, 3, 31), 3, "Europe/Berlin") == [
        utc(2024, 3, 31, 0, 30),  # 01:30 CET
        utc(2024, 3, 31, 1),  # 03:00 CEST
        utc(2024, 3, 31, 1, 30),
    ]
    assert fires("0 15 */1 * * *", utc(2024, 3, 31), 2, "Europe/Berlin") == [
        utc(2024, 3, 31, 0, 15),
        utc(2024, 3, 31, 1, 15),
    ]


def test_fall_back_fixed_time_fires_at_the_first_occurrence_only() -> None:
    assert fires("0 30 1 * * *", utc(2024, 11, 2, 12), 3, "America/New_York") == [
        utc(2024, 11, 3, 5, 30),  # 01:30 EDT
        utc(2024, 11, 4, 6, 30),
        utc(2024, 11, 5, 6, 30),
    ]
    assert fires("0 30 2 * * *", utc(2024, 10, 26, 12), 2, "Europe/Berlin") == [
        utc(2024, 10, 27, 0, 30),  # 02:30 CEST
        utc(2024, 10, 28, 1, 30),
    ]
    one_day = parse("0 */20 1 * * *", "America/New_York").fires_between(
        utc(2024, 11, 3), utc(2024, 11, 4), 10
    )
    assert one_day == [utc(2024, 11, 3, 5), utc(2024, 11, 3, 5, 20), utc(2024, 11, 3, 5, 40)]


def test_fall_back_hourly_fires_at_both_instants() -> None:
    got = fires("0 30 * * * *", utc(2024, 11, 3, 4), 4, "America/New_York")
    assert got == [
        utc(2024, 11, 3, 4, 30),  # 00:30 EDT
        utc(2024, 11, 3, 5, 30),  # 01:30 EDT
        utc(2024, 11, 3, 6, 30),  # 01:30 EST
        utc(2024, 11, 3, 7, 30),  # 02:30 EST
    ]
    assert got[2] - got[1] == timedelta(hours=1)
    assert fires("@hourly", utc(2024, 10, 26, 22, 30), 4, "Europe/Berlin") == [
        utc(2024, 10, 26, 23),  # 01:00 CEST
        utc(2024, 10, 27, 0),  # 02:00 CEST
        utc(2024, 10, 27, 1),  # 02:00 CET
        utc(2024, 10, 27, 2),  # 03:00 CET
    ]


def test_next_after_inside_the_repeated_hour() -> None:
    ny = "America/New_York"
    # in the second 01:xx (01:10 EST)
    assert parse("0 30 * * * *", ny).next_after(utc(2024, 11, 3, 6, 10)) == utc(2024, 11, 3, 6, 30)
    assert parse("0 30 1 * * *", ny).next_after(utc(2024, 11, 3, 6, 10)) == utc(2024, 11, 4, 6, 30)
    assert parse("0 5 * * * *", ny).next_after(utc(2024, 11, 3, 6, 10)) == utc(2024, 11, 3, 7, 5)
    # in the first 01:xx (01:30 EDT): an earlier minute comes back in the second pass
    assert parse("0 10 * * * *", ny).next_after(utc(2024, 11, 3, 5, 30)) == utc(2024, 11, 3, 6, 10)
    assert parse("0 50 * * * *", ny).next_after(utc(2024, 11, 3, 5, 30)) == utc(2024, 11, 3, 5, 50)
    assert parse("0 * * * * *", ny).next_after(utc(2024, 11, 3, 5, 59, 30)) == utc(2024, 11, 3, 6)
    assert parse("0 45 1 * * *", ny).next_after(utc(2024, 11, 3, 5, 50)) == utc(2024, 11, 4, 6, 45)
    assert parse("0 0 2 * * *", ny).next_after(utc(2024, 11, 3, 5, 50)) == utc(2024, 11, 3, 7)
    # only hours that never repeat, started inside the repeat
    assert parse("0 0 0-23 3 11 *", ny).next_after(utc(2024, 11, 3, 6, 10)) == utc(2024, 11, 3, 7)
    berlin = "Europe/Berlin"
    assert parse("0 15 * * * *", berlin).next_after(utc(2024, 10, 27, 0, 45)) == utc(2024, 10, 27, 1, 15)
    assert parse("0 15 * * * *", berlin).next_after(utc(2024, 10, 27, 1, 30)) == utc(2024, 10, 27, 2, 15)
    assert parse("0 15 2 * * *", berlin).next_after(utc(2024, 10, 27, 0, 45)) == utc(2024, 10, 28, 1, 15)


def test_half_hour_dst_in_lord_howe() -> None:
    lhi = "Australia/Lord_Howe"
    # 02:15 does not exist on 2024-10-06: fires at 02:30 +11
    assert fires("0 15 2 * * *", utc(2024, 10, 5), 2, lhi) == [
        utc(2024, 10, 5, 15, 30),
        utc(2024, 10, 6, 15, 15),
    ]
    assert fires("0 15 * * * *", utc(2024, 10, 5, 14), 2, lhi) == [
        utc(2024, 10, 5, 14, 45),
        utc(2024, 10, 5, 16, 15),
    ]
    # 01:45 happens twice on 2024-04-07, 30 minutes apart
    assert fires("0 45 * * * *", utc(2024, 4, 6, 14), 3, lhi) == [
        utc(2024, 4, 6, 14, 45),
        utc(2024, 4, 6, 15, 15),
        utc(2024, 4, 6, 16, 15),
    ]
    assert fires("0 45 1 * * *", utc(2024, 4, 6, 12), 2, lhi) == [
        utc(2024, 4, 6, 14, 45),
        utc(2024, 4, 7, 15, 15),
    ]


def test_midnight_gap_in_santiago() -> None:
    # 2024-09-08 00:00 does not exist in Santiago: @daily fires at 01:00 -03 that day
    assert fires("@daily", utc(2024, 9, 6, 12), 3, "America/Santiago") == [
        utc(2024, 9, 7, 4),
        utc(2024, 9, 8, 4),
        utc(2024, 9, 9, 3),
    ]
    # the 23:xx hour of 2024-04-06 happens twice
    assert fires("0 30 23 * * *", utc(2024, 4, 6, 12), 2, "America/Santiago") == [
        utc(2024, 4, 7, 2, 30),
        utc(2024, 4, 8, 3, 30),
    ]


_ORACLE_SPECS = [
    "30 2 * * *",
    "0 * * * *",
    "*/15 * * * *",
    "45 * * * *",
    "*/20 1-3 * * *",
    "0 0 * * *",
    "5 23 * * *",
]
_TRANSITIONS = [
    ("America/New_York", utc(2024, 3, 10, 7)),
    ("America/New_York", utc(2024, 11, 3, 6)),
    ("Europe/Berlin", utc(2024, 3, 31, 1)),
    ("Europe/Berlin", utc(2024, 10, 27, 1)),
    ("Australia/Lord_Howe", utc(2024, 4, 6, 15)),
    ("Australia/Lord_Howe", utc(2024, 10, 5, 15, 30)),
    ("America/Santiago", utc(2024, 4, 7, 3)),
    ("America/Santiago", utc(2024, 9, 8, 4)),
]


def _oracle(spec: str, zone: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    """The DST rules applied minute by minute, with croniter deciding which wall times match."""
    wall_start = start.astimezone(zone).replace(tzinfo=None) - timedelta(hours=3)
    matcher = croniter(spec, wall_start, ret_type=datetime)
    walls: set[datetime] = set()
    while (wall := matcher.get_next(datetime)) < end.astimezone(zone).replace(tzinfo=None) + timedelta(
        hours=3
    ):
        walls.add(wall)
    every_hour = spec.split()[1] == "*"
    out = []
    moment = start + timedelta(minutes=1)
    while moment <= end:
        local = moment.astimezone(zone)
        wall = local.replace(tzinfo=None)
        repeated = zone.utcoffset(wall.replace(fold=1 - local.fold)) != local.utcoffset()
        fire = wall in walls and (every_hour or not repeated or local.fold == 0)
        previous = (moment - timedelta(minutes=1)).astimezone(zone).replace(tzinfo=None)
        if not every_hour and wall - previous > timedelta(minutes=1):  # just after a gap
            missing = previous + timedelta(minutes=1)
            while missing < wall:
                fire = fire or missing in walls
                missing += timedelta(minutes=1)
        if fire:
            out.append(moment)
        moment += timedelta(minutes=1)
    return out


@pytest.mark.parametrize(("zone_name", "change"), _TRANSITIONS)
@pytest.mark.parametrize("spec", _ORACLE_SPECS)
def test_dst_rules_match_a_minute_by_minute_oracle(spec: str, zone_name: str, change: datetime) -> None:
    zone = ZoneInfo(zone_name)
    start, end = change - timedelta(hours=26), change + timedelta(hours=26)
    expected = _oracle(spec, zone, start, end)
    schedule = parse(spec, zone_name)
    assert schedule.fires_between(start, end, 10_000) == expected
    assert next_fire_times(schedule, start, len(expected)) == expected
    # starting anywhere, including inside a gap's aftermath or a repeated hour, finds the same next fire
    for minutes in range(0, 52 * 60, 7):
        after = start + timedelta(minutes=minutes, seconds=30)
        following = [t for t in expected if t > after]
        if following:
            assert schedule.next_after(after) == following[0], after
        assert schedule.fires_between(after, end, 2) == [t for t in expected if t > after][-2:]
