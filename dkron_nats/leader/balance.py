"""Partitions balanced by their jobs: a plan the owner of partition 0 keeps and every server follows.

By number alone (partitions.py) servers do not decide evenly: 16 partitions over 3 servers are 6/5/5, so
the server with 6 holds 12.5% more than a third, and more when its partitions happen to hold more jobs (a
job's partition is a hash of its name): 1.15-1.20x of an even share in the scaling benchmark (its 500 jobs:
1.09x balanced, the best 16 partitions of about 31 jobs each allow). So the owner
of partition 0 looks every `PLAN_EVERY` seconds at each partition's jobs and, once a server holds more than
`REPLAN_ABOVE` of an even share, swaps partitions between the server with the most jobs and the one with the
fewest until none holds more than `BALANCED` (or no swap helps), and stores the result as the cluster's
partition plan. Every server assigns partitions by the plan while the live servers are the plan's.

Hysteresis keeps partitions still: a plan changes only when a server drifts past `REPLAN_ABOVE`, and then
starts from the plan in force, so a new job, or a hundred, moves nothing, and a re-plan moves a few
partitions. (Balancing by the job counts directly, as a pure function of them, moved partitions at every
batch of new jobs.) A server that joins or leaves makes the plan stale: the plain assignment applies at once
(takeovers do not wait for a plan) and the next look plans for the new set of servers from it.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence

import anyio

from dkron_nats.kv.cache import KVCache
from dkron_nats.kv.typed import TRANSIENT
from dkron_nats.leader.partitions import assign, live_servers
from dkron_nats.members import Registry
from dkron_nats.models import PARTITION_PLAN_KEY, JobSpec, PartitionPlan
from dkron_nats.subjects import partition_of

logger = logging.getLogger(__name__)

BALANCE_FROM = 32
"""Jobs in the cluster from which partitions are balanced by their jobs (fewer: by their number only)."""
REPLAN_ABOVE = 1.12
"""A server holding more than this multiple of an even share of the jobs makes the plan change."""
BALANCED = 1.04
"""A re-plan swaps partitions until no server holds more than this multiple of an even share."""
PLAN_EVERY = 5.0
"""Seconds between two looks at the balance."""


class JobsPerPartition:
    """How many jobs each partition holds, kept up to date from the jobs cache."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._counts = [0] * count
        self._partition: dict[str, int] = {}

    def __call__(self) -> list[int]:
        return list(self._counts)

    def follow(self, jobs: KVCache[JobSpec]) -> Callable[[], None]:
        """Count the jobs cached now and every change from here on; returns the unsubscribe function."""
        for key, spec in jobs.items():
            self.changed(key, spec is not None)
        return jobs.listen(lambda key, spec: self.changed(key, spec is not None))

    def changed(self, key: str, exists: bool) -> None:
        if exists and key not in self._partition:
            partition = self._partition[key] = partition_of(key, self.count)
            self._counts[partition] += 1
        elif not exists and key in self._partition:
            self._counts[self._partition.pop(key)] -= 1


def shares(owners: Sequence[str], jobs: Sequence[int]) -> dict[str, float]:
    """Each server's jobs under `owners` (partition -> server) as a multiple of an even share."""
    held: Counter[str] = Counter(dict.fromkeys(owners, 0))
    for partition, node in enumerate(owners):
        held[node] += jobs[partition]
    total = sum(jobs)
    return {node: count * len(held) / total if total else 1.0 for node, count in held.items()}


def next_plan(
    count: int, servers: Sequence[str], jobs: Sequence[int], current: PartitionPlan | None
) -> PartitionPlan | None:
    """The plan to store now, or None: the one in force (or none) is good enough."""
    ordered = sorted(servers)
    if len(ordered) < 2 or sum(jobs) < BALANCE_FROM or len(jobs) != count:
        return None
    assigned = assign(count, ordered, current)
    owners = [assigned[p] for p in range(count)]
    if max(shares(owners, jobs).values()) <= REPLAN_ABOVE:
        return None  # the plan in force, or the plain assignment, is within bounds
    balanced = _swapped(owners, jobs)
    if balanced == owners:
        return None
    return PartitionPlan(servers=ordered, owners=balanced)


def _swapped(start: Sequence[str], jobs: Sequence[int]) -> list[str]:
    """`start` with partitions swapped between the server with the most jobs and the one with the fewest,
    the best swap each time, until no server holds more than BALANCED of an even share or no swap lowers
    the most by a hundredth of an even share. Swaps keep every server's number of partitions; ties go by
    name and partition, so the result depends on the inputs only."""
    owners = list(start)
    step = max(1, sum(jobs) // (100 * len(set(owners))))
    for _ in range(4 * len(owners)):
        load = shares(owners, jobs)
        heavy = max(load, key=lambda node: (load[node], node))
        light = min(load, key=lambda node: (load[node], node))
        if load[heavy] <= BALANCED:
            break
        swap = _best_swap(owners, jobs, heavy, light, step)
        if swap is None:
            break
        p, q = swap
        owners[p], owners[q] = light, heavy
    return owners


def _best_swap(
    owners: Sequence[str], jobs: Sequence[int], heavy: str, light: str, step: int
) -> tuple[int, int] | None:
    """The swap of a partition of `heavy` with one of `light` that lowers the more loaded of the two most,
    if by `step` jobs or more."""
    mine = [p for p, node in enumerate(owners) if node == heavy]
    theirs = [q for q, node in enumerate(owners) if node == light]
    heavy_jobs = sum(jobs[p] for p in mine)
    light_jobs = sum(jobs[q] for q in theirs)
    best: tuple[int, int, int] | None = None
    for p in mine:
        for q in theirs:
            moved = jobs[p] - jobs[q]
            gain = heavy_jobs - max(heavy_jobs - moved, light_jobs + moved)
            if gain >= step and (best is None or gain > best[0]):
                best = (gain, p, q)
    return None if best is None else (best[1], best[2])


class Planner:
    """The chore of partition 0's owner: keep the cluster's partition plan balanced (module docstring)."""

    def __init__(
        self, plans: KVCache[PartitionPlan], registry: Registry, me: str, jobs: JobsPerPartition
    ) -> None:
        self.plans = plans
        """The settings bucket's plan, cached: read from here, written through its store."""
        self.registry = registry
        self.me = me
        self.jobs = jobs

    async def run(self) -> None:
        while True:
            await anyio.sleep(PLAN_EVERY)
            await self.look()

    async def look(self) -> None:
        current = self.plans.get(PARTITION_PLAN_KEY)
        plan = next_plan(self.jobs.count, live_servers(self.registry, self.me), self.jobs(), current)
        if plan is None:
            return
        try:
            revision = await self.plans.store.put(PARTITION_PLAN_KEY, plan)
        except TRANSIENT:
            logger.warning("the partition plan could not be stored now (NATS unavailable); next look")
            return
        self.plans.apply(PARTITION_PLAN_KEY, plan, revision)  # the next look sees it
        logger.info("new partition plan, by jobs: %s", _describe(plan, self.jobs()))


def _describe(plan: PartitionPlan, jobs: Sequence[int]) -> str:
    return ", ".join(f"{node} {share:.2f}x" for node, share in sorted(shares(plan.owners, jobs).items()))
