"""dkron-nats's cron parser against robfig/cron v3, the library Dkron parses and schedules with.

`tests/oracles/robfig/main.go` wraps robfig's parser (with Dkron's options: six fields with seconds,
descriptors) and its `Next`. It is built once per session, offline in GOPATH mode against Debian's
`golang-github-robfig-cron-dev`, and answers all the questions of a test in one process.

- Issue 18, defect 3: a day-of-month with a step (`*/2`) is restricted, so with a named day of week a day
  matches if either field does.
- Edge cases the generator rarely reaches: robfig's quirks (`*-5`, `+05`, `,`), day of week 7, the
  five-year search limit around 2100, the TZ= prefix's spacing.
- A seeded generator of thousands of specs (stars, `?`, values, names in any case, ranges, steps, lists,
  empty list items and malformed parts) in zones with and without DST: dkron-nats accepts exactly the
  specs robfig accepts, and its successive fire times are robfig's. Days on which the zone's UTC offset
  changes are left out of the time comparison, naming why: there dkron-nats follows its own documented
  DST rules (`docs/scheduling.md`), while robfig skips spring-forward times, can fire a fixed time twice
  at fall-back, and walks hours in elapsed time (half-hour shifts in Lord Howe move its later fires).
  Set DKRON_NATS_CRON_SEED to explore other specs.
"""

from __future__ import annotations

import calendar
import json
import os
import random
import subprocess
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache
from itertools import pairwise
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

from dkron_nats.schedule import ScheduleError, next_fire_times, parse_schedule
from tests.gobuild import build, gopath_holding

ROOT = Path(__file__).resolve().parents[2]
ORACLE_SRC = ROOT / "tests" / "oracles" / "robfig" / "main.go"
ROBFIG = Path("src", "github.com", "robfig", "cron")
INSTALL = (
    "install Debian's golang-go and golang-github-robfig-cron-dev (CI's .ci/run installs them when missing)"
)
SEED = int(os.environ.get("DKRON_NATS_CRON_SEED", "18"))
CASES = 4000
FIRES = 5
ZONES = (
    "UTC",
    "America/New_York",
    "Europe/Berlin",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "Asia/Kolkata",
)


# --- building and asking the oracle -------------------------------------------------------------------


@pytest.fixture(scope="session")
def oracle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/oracles/robfig/main.go, built offline in GOPATH mode against Debian's Go libraries."""
    gopath = gopath_holding(ROBFIG, "golang-github-robfig-cron-dev", INSTALL)
    return build(ORACLE_SRC, tmp_path_factory.mktemp("robfig-oracle") / "robfig", gopath, INSTALL)


@dataclass(frozen=True)
class Question:
    zone: str
    spec: str
    starts: tuple[datetime, ...]


def ask(oracle: Path, questions: list[Question]) -> list[dict[str, Any]]:
    """robfig's answers: {"error": message} or {"next": [aware UTC datetime or None per start]}."""
    lines = [
        json.dumps({"zone": q.zone, "spec": q.spec, "starts": [int(s.timestamp()) for s in q.starts]})
        for q in questions
    ]
    done = subprocess.run(
        [str(oracle)], input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=120, check=True
    )
    answers: list[dict[str, Any]] = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(answers) == len(questions), done.stderr
    for answer in answers:
        answer["next"] = [None if n is None else datetime.fromtimestamp(n, UTC) for n in answer["next"] or []]
    return answers


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def ours(spec: str, zone: str, start: datetime, count: int) -> list[datetime]:
    schedule = parse_schedule(spec, job_name="job", timezone=zone, anchor=start)
    return next_fire_times(schedule, start, count)


def robfig_fires(oracle: Path, spec: str, zone: str, start: datetime, count: int) -> list[datetime]:
    fires: list[datetime] = []
    for _ in range(count):  # each answer is the next question: robfig's own chain of fires
        (answer,) = ask(oracle, [Question(zone, spec, (fires[-1] if fires else start,))])
        fires.append(answer["next"][0])
    return fires


# --- issue 18, defect 3 ---------------------------------------------------------------------------------


def test_a_stepped_day_of_month_is_restricted_so_either_day_field_matches(oracle: Path) -> None:
    # 2024-09-01 is a Sunday. Dkron: every odd day of the month, and every Monday.
    spec, start = "0 0 0 */2 * MON", utc(2024, 9, 1)
    expected = [utc(2024, 9, day) for day in (2, 3, 5, 7, 9, 11, 13, 15, 16, 17)]
    assert ours(spec, "UTC", start, 10) == expected
    assert robfig_fires(oracle, spec, "UTC", start, 10) == expected
    reference = croniter(spec, start, ret_type=datetime, second_at_beginning=True)
    assert [reference.get_next(datetime) for _ in range(10)] == expected
    # a star with step 1 keeps the field unrestricted: only Mondays, as in robfig
    assert ours("0 0 0 */1 * MON", "UTC", start, 3) == [utc(2024, 9, 2), utc(2024, 9, 9), utc(2024, 9, 16)]
    assert robfig_fires(oracle, "0 0 0 */1 * MON", "UTC", start, 3) == ours(
        "0 0 0 */1 * MON", "UTC", start, 3
    )


def test_day_of_week_seven_stays_sunday_where_robfig_refuses_it(oracle: Path) -> None:
    """The one field rule kept on purpose (docs/dkron-differences.md): stored jobs may use 7."""
    start = utc(2024, 5, 1)  # a Wednesday
    assert ours("0 0 0 * * 7", "UTC", start, 2) == [utc(2024, 5, 5), utc(2024, 5, 12)]
    assert ours("0 0 0 * * 5-7", "UTC", start, 3) == [utc(2024, 5, 3), utc(2024, 5, 4), utc(2024, 5, 5)]
    # `*` and `a/n` still end at 6, so stepped days are robfig's
    for spec in ("0 0 0 * * 1/2", "0 0 0 * * */3"):
        assert ours(spec, "UTC", start, 6) == robfig_fires(oracle, spec, "UTC", start, 6)
    (refused,) = ask(oracle, [Question("UTC", "0 0 0 * * 7", (start,))])
    assert "error" in refused


# --- the generated specs -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldShape:
    low: int
    high: int
    names: tuple[str, ...] = ()
    junk: tuple[str, ...] = ()


MONTHS = tuple(m.upper() for m in calendar.month_abbr if m)
DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
COMMON_JUNK = (
    "*/0", "*-5", "?-x", "*-1-2/3", "1-2-3", "1/2/3", "*/", "/5", "5-", "-5", "x", "L", "5#2", "+5",
    "05", "+0", "*/+2", "*/-2", "*/01", "?/+1", "0x5", "1_0", "\u0663", "**", "*5", "1-*", "2/0", "*/2-3",
    "*/9223372036854775807", "*/9223372036854775808", "1/18446744073709551617", "5\x1c",
)  # fmt: skip
SHAPES = (
    FieldShape(0, 59, junk=("60", "59-60", "0-59/61")),
    FieldShape(0, 59, junk=("60", "-0")),
    FieldShape(0, 23, junk=("24", "23-24/2")),
    FieldShape(1, 31, junk=("0", "32", "0/2", "31/2")),
    FieldShape(1, 12, MONTHS, junk=("0", "13", "JANUARY", "DEC-JAN", "feb/3", "jan-", "MON")),
    FieldShape(
        0,
        6,
        DAYS,
        junk=(
            "MONDAY",
            "FRI-MON",
            "FR\u0130",
            "\u017fun",
            "sat/2",
            "*/mon",
            "JAN",
        ),
    ),
)
DESCRIPTORS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")


def _any_case(rng: random.Random, text: str) -> str:
    return "".join(rng.choice((c.lower(), c.upper())) for c in text)


def _value(rng: random.Random, shape: FieldShape, low: int | None = None) -> tuple[int, str]:
    value = rng.randint(shape.low if low is None else low, shape.high)
    if shape.names and rng.random() < 0.3:
        return value, _any_case(rng, shape.names[value - shape.low])
    return value, str(value)


def _step(rng: random.Random, shape: FieldShape) -> str:
    return str(rng.choice((1, 2, 2, 3, 5, rng.randint(1, shape.high - shape.low + 2))))


def _part(rng: random.Random, shape: FieldShape) -> str:
    kind = rng.choices(
        ("star", "star_step", "value", "range", "range_step", "open_step", "junk"),
        weights=(3, 3, 5, 3, 2, 2, 1),
    )[0]
    star = rng.choice("**?")
    if kind == "star":
        return star
    if kind == "star_step":
        return f"{star}/{_step(rng, shape)}"
    first, first_text = _value(rng, shape)
    if kind == "value":
        return first_text
    if kind == "open_step":
        return f"{first_text}/{_step(rng, shape)}"
    if kind in ("range", "range_step"):
        ordered = rng.random() < 0.9
        _, last_text = _value(rng, shape, first if ordered else None)
        suffix = f"/{_step(rng, shape)}" if kind == "range_step" else ""
        return f"{first_text}-{last_text}{suffix}"
    return rng.choice(COMMON_JUNK + shape.junk)


def _field(rng: random.Random, shape: FieldShape, index: int) -> str:
    if index >= 3 and rng.random() < 0.01:  # no values at all: robfig accepts it (a day field never matches)
        return ","
    parts = [_part(rng, shape) for _ in range(rng.choices((1, 2, 3), weights=(7, 2, 1))[0])]
    if rng.random() < 0.03:  # robfig drops empty list items
        parts.insert(rng.randint(0, len(parts)), "")
    return ",".join(parts)


def generated_spec(rng: random.Random) -> tuple[str, str]:
    """(spec, job zone): mostly six fields; sometimes a descriptor, a TZ= prefix or a wrong field count."""
    zone = rng.choice(ZONES)
    roll = rng.random()
    if roll < 0.03:
        return rng.choice(DESCRIPTORS), zone
    fields = [_field(rng, shape, i) for i, shape in enumerate(SHAPES)]
    if roll < 0.05:  # five fields are a documented extension of dkron-nats, so never four or five here
        fields = fields[:4] if rng.random() < 0.5 else [*fields, "*"]
    spec = "".join(f"{_space(rng)}{field}" for field in fields).removeprefix(" ")
    if rng.random() < 0.05:
        spec = f"{rng.choice(('TZ', 'CRON_TZ'))}={rng.choice((*ZONES, ''))}{_space(rng)}{spec}"
    if rng.random() < 0.03:
        spec = f"{_space(rng)}{spec}{_space(rng)}"
    return spec, zone


def _space(rng: random.Random) -> str:
    """Mostly one space, sometimes more or other Unicode spaces (U+001C, which only Python counts as space,
    is in COMMON_JUNK: between fields it would make five fields, a documented extension)."""
    return rng.choices((" ", "  ", "\t", "\u00a0", "\u2003"), weights=(90, 3, 3, 2, 2))[0]


def generated_start(rng: random.Random, zone: ZoneInfo) -> datetime:
    roll = rng.random()
    if roll < 0.05:  # the last seconds of a local year: robfig's five-year limit counts from the next second
        year = rng.randint(2020, 2099)
        wall = datetime(year, 12, 31, 23, 59, rng.choice((58, 59)), tzinfo=zone)
        return wall.astimezone(UTC)
    low, high = (2095, 2100) if roll < 0.1 else (2020, 2045)  # around 2100, not a leap year
    seconds = rng.randrange(int(utc(low, 1, 1).timestamp()), int(utc(high, 1, 1).timestamp()))
    return datetime.fromtimestamp(seconds, UTC)


def effective_zone(spec: str, job_zone: str) -> str:
    """The zone the spec runs in: its own TZ=/CRON_TZ= prefix (up to the first space, as robfig reads it)."""
    if not spec.startswith(("TZ=", "CRON_TZ=")):
        return job_zone
    name = spec.partition(" ")[0].partition("=")[2] or "UTC"
    return name if name in ZONES else job_zone  # any other name is refused by both parsers


@cache
def offset_change_days(zone_name: str, year: int) -> frozenset[date]:
    """The local dates in `year` on which the zone's UTC offset changes (none of these zones at midnight)."""
    first = datetime(year, 1, 1, tzinfo=ZoneInfo(zone_name))
    midnights = [first + timedelta(days=n) for n in range(367)]  # wall-clock arithmetic: local midnights
    return frozenset(
        today.date() for today, tomorrow in pairwise(midnights) if today.utcoffset() != tomorrow.utcoffset()
    )


def on_offset_change_day(moment: datetime | None, zone_name: str) -> bool:
    if moment is None:
        return False
    local = moment.astimezone(ZoneInfo(zone_name)).date()
    return local in offset_change_days(zone_name, local.year)


@dataclass
class Case:
    spec: str
    zone: str
    error: str | None
    fires: list[datetime]
    question: Question


def our_case(spec: str, zone: str, start: datetime) -> Case:
    try:
        schedule = parse_schedule(spec, job_name="job", timezone=zone, anchor=start)
    except ScheduleError as exc:
        return Case(spec, zone, str(exc), [], Question(zone, spec, ()))
    fires = next_fire_times(schedule, start, FIRES)
    # robfig is asked for the next fire after the start and after each of our fires but the last
    starts = (start, *fires[: FIRES - 1])
    return Case(spec, zone, None, fires, Question(zone, spec, starts))


def _compare(case: Case, answer: dict[str, Any], counts: Counter[str]) -> list[str]:
    where = f"{case.spec!r} in {case.zone}"
    if (case.error is None) != ("error" not in answer):
        return [
            f"{where}: dkron-nats says {case.error or 'valid'}, robfig says {answer.get('error', 'valid')}"
        ]
    counts["parsed" if case.error is None else "refused"] += 1
    if case.error is not None:
        return []
    zone = effective_zone(case.spec, case.zone)
    mismatches: list[str] = []
    for i, (start, theirs) in enumerate(zip(case.question.starts, answer["next"], strict=True)):
        mine = case.fires[i] if i < len(case.fires) else None
        if any(on_offset_change_day(t, zone) for t in (start, mine, theirs)):
            counts["left out: on a day the UTC offset changes"] += 1
            continue
        counts["fire times compared"] += 1
        counts[f"compared in {zone}"] += 1
        if mine != theirs:
            mismatches.append(f"{where} after {start.isoformat()}: dkron-nats {mine}, robfig {theirs}")
    return mismatches


EDGE_CASES = [
    ("0 0 0 */2 * FRI", "UTC", utc(2024, 9, 1)),
    ("0 0 0 */1 * FRI", "UTC", utc(2024, 9, 1)),
    ("0 0 0 1-31 * FRI", "UTC", utc(2024, 9, 1)),
    ("0 0 0 5,? * FRI", "UTC", utc(2024, 9, 1)),
    ("0 0 0 13 * *,FRI", "UTC", utc(2024, 9, 1)),
    ("0 0 0 1-31/2 * MON-FRI/2", "UTC", utc(2024, 9, 1)),
    ("? ? ? ? ? ?", "UTC", utc(2024, 5, 1)),
    ("0 ?/20 0 * * *", "UTC", utc(2024, 5, 1)),
    ("0 0 0 1,,15, * *", "UTC", utc(2024, 5, 1)),
    ("0 0 *-5 * * *", "UTC", utc(2024, 5, 1)),
    ("0 0 +05 * * *", "UTC", utc(2024, 5, 1)),
    ("0 0 0 * * FR\u0130", "UTC", utc(2024, 5, 1)),
    ("0 0 0 , * MON", "UTC", utc(2024, 5, 1)),
    ("0 0 0 , * *", "UTC", utc(2024, 5, 1)),
    ("0 0 0 29 2 *", "UTC", utc(2096, 3, 1)),
    ("0 0 0 29 2 *", "UTC", utc(2098, 12, 31, 23, 59, 58)),
    ("0 0 0 29 2 *", "UTC", utc(2098, 12, 31, 23, 59, 59)),
    ("0 0 0 29 2 *", "Europe/Berlin", utc(2098, 12, 31, 22, 59, 59)),
    ("0 0 0 30 2 *", "UTC", utc(2024, 1, 1)),
    (" TZ=UTC 0 0 0 * * *", "UTC", utc(2024, 5, 1)),
    ("TZ=UTC\t0 0 0 * * *", "UTC", utc(2024, 5, 1)),
    ("TZ=Asia/Tokyo 0 0 9 * * *", "America/New_York", utc(2024, 5, 1)),
    ("*/9223372036854775807 * * * * *", "UTC", utc(2024, 5, 1)),
    ("*/9223372036854775808 * * * * *", "UTC", utc(2024, 5, 1)),
    ("@weekly", "Europe/Berlin", utc(2024, 5, 1)),
    ("@hourly", "Asia/Kolkata", utc(2024, 5, 1)),
]


def test_edge_cases_match_robfig(oracle: Path) -> None:
    cases = [our_case(spec, zone, start) for spec, zone, start in EDGE_CASES]
    counts: Counter[str] = Counter()
    answers = ask(oracle, [c.question for c in cases])
    mismatches = [
        m for case, answer in zip(cases, answers, strict=True) for m in _compare(case, answer, counts)
    ]
    assert not mismatches, "\n".join(mismatches)
    assert counts["refused"] == 3, counts
    assert counts["fire times compared"] == sum(len(c.question.starts) for c in cases), (
        counts
    )  # none left out


def test_generated_specs_match_robfig(oracle: Path) -> None:
    rng = random.Random(SEED)
    cases = []
    for _ in range(CASES):
        spec, zone = generated_spec(rng)
        cases.append(our_case(spec, zone, generated_start(rng, ZoneInfo(effective_zone(spec, zone)))))
    answers = ask(oracle, [c.question for c in cases])
    counts: Counter[str] = Counter()
    mismatches = [
        m for case, answer in zip(cases, answers, strict=True) for m in _compare(case, answer, counts)
    ]
    assert not mismatches, f"{len(mismatches)} differences from robfig (seed {SEED}):\n" + "\n".join(
        mismatches[:25]
    )
    # the comparison is not vacuous: most specs parse, many are refused, and every zone is compared
    assert counts["parsed"] >= CASES // 2, counts
    assert counts["refused"] >= CASES // 10, counts
    assert counts["fire times compared"] >= CASES * 2, counts
    assert all(counts[f"compared in {zone}"] >= CASES // 20 for zone in ZONES), counts
