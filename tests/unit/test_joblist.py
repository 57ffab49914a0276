"""The job list's indexes answer exactly what a pass over every job would, through adds, edits and deletes."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from dkron_nats.joblist import JobLister, JobQuery, _sort_value
from dkron_nats.jobs import SORTABLE, JobView
from dkron_nats.kv.cache import KVCache
from dkron_nats.models import JobSpec, JobState
from dkron_nats.names import job_key
from dkron_nats.nextfire import NextFireCache

NAMES = ["alpha", "Beta", "gamma", "Delta", "eps", "zeta", "ETA", "theta"]
T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Service:
    """The part of JobService the lister reads: the two caches and the view."""

    def __init__(self) -> None:
        self.jobs: KVCache[JobSpec] = KVCache(cast(Any, None))
        self.states: KVCache[JobState] = KVCache(cast(Any, None))

    def view(self, spec: JobSpec) -> JobView:
        return JobView(spec, self.states.get(job_key(spec.name)) or JobState(), [], [])


def random_spec(rng: random.Random, i: int) -> JobSpec:
    return JobSpec(
        name=f"{rng.choice(NAMES)}-{i:04d}",
        displayname=rng.choice(["", "Nightly", "payroll run", "backup"]),
        schedule=rng.choice(["@every 1m", "@manually", "0 0 * * * *"]),
        disabled=rng.random() < 0.2,
        metadata={"team": f"t{rng.randrange(4)}", **({"tier": "gold"} if rng.random() < 0.3 else {})},
        tags={"role": rng.choice(["web", "db:2", "web:1"])} if rng.random() < 0.7 else None,
    )


def random_state(rng: random.Random) -> JobState:
    ran = rng.random() < 0.7
    return JobState(
        success_count=rng.randrange(5),
        error_count=rng.randrange(3),
        status=rng.choice(["success", "failed", "partially_failed"]) if ran else "",
        last_success=T0 + timedelta(minutes=rng.randrange(100)) if ran and rng.random() < 0.8 else None,
    )


def reference(service: Service, nexts: NextFireCache, query: JobQuery) -> tuple[int, list[str]]:
    """The listing by brute force: filter every job, sort, slice."""
    status = "" if query.status == "untriggered" else query.status
    rows = []
    for key, spec in service.jobs.items():
        state = service.states.get(key) or JobState()
        tags = {k: v.partition(":")[0] for k, v in (spec.tags or {}).items()}
        if query.q and query.q not in spec.name and query.q not in spec.displayname:
            continue
        if status is not None and state.status != status:
            continue
        if query.disabled is not None and str(spec.disabled).lower() != query.disabled:
            continue
        if any(tags.get(k) != v for k, v in query.tags.items()):
            continue
        if any((spec.metadata or {}).get(k) != v for k, v in query.metadata.items()):
            continue
        attr = SORTABLE[query.sort]
        nxt = nexts.get(spec) if attr == "next" else None
        rows.append((_sort_value(attr, spec, state, nxt), spec.name))
    rows.sort()
    names = [name for _, name in rows]
    if query.descending:
        names.reverse()
    return len(names), names[query.start : query.end]


def random_query(rng: random.Random) -> JobQuery:
    start = rng.choice([0, 0, 5, 40])
    return JobQuery(
        q=rng.choice(["", "", "a-0", "ta", "Nightly", "zzz", "1\nN"]),
        status=rng.choice([None, None, "success", "failed", "untriggered"]),
        disabled=rng.choice([None, None, "true", "false"]),
        metadata=rng.choice([{}, {}, {"team": "t1"}, {"team": "t2", "tier": "gold"}, {"team": "none"}]),
        tags=rng.choice([{}, {}, {"role": "web"}, {"role": "db"}]),
        sort=rng.choice(sorted(SORTABLE)),
        descending=rng.random() < 0.5,
        start=start,
        end=rng.choice([None, start + 10, start + 1]),
    )


@pytest.mark.parametrize("seed", range(5))
def test_indexed_listing_equals_a_pass_over_every_job(seed: int) -> None:
    rng = random.Random(seed)
    service = Service()
    nexts = NextFireCache(clock=lambda: T0)
    revision = 0

    def write(spec: JobSpec | None, key: str) -> None:
        nonlocal revision
        revision += 1
        service.jobs.apply(key, spec, revision)

    for i in range(120):
        spec = random_spec(rng, i)
        write(spec, job_key(spec.name))
    lister = JobLister(cast(Any, service), nexts)  # built on a filled cache, then kept current
    for i in range(120, 200):
        spec = random_spec(rng, i)
        write(spec, job_key(spec.name))
    for round_no in range(40):
        keys = [key for key, _ in service.jobs.items()]
        for key in rng.sample(keys, 5):  # edits: metadata, tags and flags change, names never do
            old = service.jobs.get(key)
            assert old is not None
            edited = random_spec(rng, 0)
            write(
                JobSpec(name=old.name, metadata=edited.metadata, tags=edited.tags, disabled=edited.disabled),
                key,
            )
            revision += 1
            service.states.apply(key, random_state(rng), revision)
        for key in rng.sample(keys, 2):
            write(None, key)
        for i in range(3):
            spec = random_spec(rng, 1000 + round_no * 3 + i)
            write(spec, job_key(spec.name))
        for _ in range(10):
            query = random_query(rng)
            total, page = lister.list(query)
            assert (total, [v.spec.name for v in page]) == reference(service, nexts, query), query
        # Only states change (jobs ran): orders by counters and status must follow.
        for key in rng.sample([key for key, _ in service.jobs.items()], 20):
            revision += 1
            service.states.apply(key, random_state(rng), revision)
        for sort in ("success_count", "status", "last_success"):
            query = JobQuery(sort=sort, end=30)
            total, page = lister.list(query)
            assert (total, [v.spec.name for v in page]) == reference(service, nexts, query), query
