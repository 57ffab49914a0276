"""The partition map: which job is in which partition, who should own each, and the names an owner uses."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import cast

import msgspec
import pytest

from dkron_nats.leader.partitions import STAGGER, WARM_UP, Spread, assign, ranking
from dkron_nats.members import Registry
from dkron_nats.models import Member
from dkron_nats.subjects import (
    LEADER_RUN,
    ONLY_PARTITION,
    Partition,
    partition_of,
    result_node,
    result_subject,
)
from dkron_nats.timefmt import utcnow
from tests.members import server_member


@pytest.mark.parametrize("count", [1, 4, 16, 64])
@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_every_partition_has_an_owner_and_loads_differ_by_at_most_one(count: int, size: int) -> None:
    servers = [f"s{i}" for i in range(size)]
    owners = assign(count, servers)
    assert sorted(owners) == list(range(count))
    loads = Counter(owners.values())
    fair = count // size
    assert all(loads[s] in (fair, fair + (count % size > 0)) for s in servers), loads


def test_sixteen_partitions_over_three_servers_split_within_15_percent_of_a_third() -> None:
    loads = Counter(assign(16, ["s1", "s2", "s3"]).values())
    assert all(abs(load / 16 - 1 / 3) <= 0.15 / 3 for load in loads.values()), loads


def test_the_assignment_is_the_same_whatever_order_the_servers_are_listed_in() -> None:
    assert assign(16, ["s1", "s2", "s3"]) == assign(16, ["s3", "s1", "s2"])


def test_a_fourth_server_takes_partitions_from_the_others_and_few_others_move() -> None:
    before = assign(16, ["s1", "s2", "s3"])
    after = assign(16, ["s1", "s2", "s3", "s4"])
    taken = [p for p in range(16) if after[p] == "s4"]
    shuffled = [p for p in range(16) if after[p] != before[p] and after[p] != "s4"]
    assert len(taken) == 4
    assert len(shuffled) <= 4, f"{len(shuffled)} partitions moved between the servers that stayed"


def test_a_job_is_in_the_same_partition_on_every_server_and_in_every_version() -> None:
    """Stored decisions and results are found by partition: the hash must never change (CRC-32)."""
    assert [partition_of(key, 16) for key in ("job1", "backup", "=e29c93")] == [9, 12, 13]
    assert {partition_of("anything", 1)} == {0}


def test_a_cluster_of_one_partition_uses_the_names_of_before_partitions() -> None:
    one = ONLY_PARTITION
    assert one.lease_key == "scheduler"
    assert one.result_subject("web1") == result_subject("web1") == "dkron.result.web1"
    assert one.results_filter == "dkron.result.>"
    assert one.durable("dkron-leader") == "dkron-leader"
    assert one.trigger_subject("job1") == "dkron.triggered.job1"
    assert one.triggers_filter == "dkron.triggered.>"
    assert one.manual_runs == LEADER_RUN
    assert one.owns("job1")
    assert one.tag is None


def test_each_partition_of_several_has_names_of_its_own_that_no_other_filter_matches() -> None:
    third = Partition(3, 16)
    assert third.lease_key == "scheduler.3"
    assert third.result_subject("web1") == "dkron.result.web1.3"
    assert result_node(third.result_subject("web1")) == result_node(result_subject("web1")) == "web1"
    assert third.results_filter == "dkron.result.*.3"
    assert third.durable("dkron-leader") == "dkron-leader-3"
    assert third.trigger_subject("job1") == "dkron.triggered.3.job1"
    assert third.manual_runs == f"{LEADER_RUN}.3"
    assert [p for p in range(16) if Partition(p, 16).owns("job1")] == [partition_of("job1", 16)]


class _Registry:
    def __init__(self, started: dict[str, float]) -> None:
        now = utcnow()
        self.members = {
            name: server_member(name, now - timedelta(seconds=age)) for name, age in started.items()
        }

    def alive(self) -> list[Member]:
        return list(self.members.values())

    def get(self, name: str) -> Member | None:
        return self.members.get(name)


def _spread(partition: int, me: str, registry: _Registry, now: list[float]) -> Spread:
    return Spread(Partition(partition, 8), me, cast(Registry, registry), clock=lambda: now[0])


def test_the_assignee_campaigns_at_once_and_the_others_one_after_another() -> None:
    registry = _Registry({"s1": 60, "s2": 60, "s3": 60})
    owner = assign(8, ["s1", "s2", "s3"])[0]
    delays = {name: _spread(0, name, registry, [0.0]).campaign_delay() for name in registry.members}
    assert delays[owner] == 0
    others = sorted(delay for name, delay in delays.items() if name != owner)
    assert others[0] >= STAGGER
    assert others[1] > others[0]
    assert next(n for n in ranking(0, ["s1", "s2", "s3"]) if n != owner) == min(
        (n for n in delays if n != owner), key=delays.__getitem__
    )


def test_the_assignee_of_the_servers_that_remain_takes_over_from_a_gone_holder_first() -> None:
    registry = _Registry({"s1": 60, "s2": 60, "s3": 60, "s4": 60})
    holder = assign(8, list(registry.members))[0]
    rest = [n for n in registry.members if n != holder]
    heir = assign(8, rest)[0]

    def takers(confirmed_for: float) -> list[str]:
        return [n for n in rest if _spread(0, n, registry, [0.0]).may_steal(holder, confirmed_for)]

    assert takers(0.0) == [heir]
    assert not _spread(0, holder, registry, [0.0]).may_steal(holder, 60.0), "stole from its own last process"


def test_a_gone_holder_is_replaced_by_the_others_in_ranking_order_when_its_heir_does_not() -> None:
    """Servers can disagree on who is alive (one has seen a join the other has not): if the heir they
    name does not take over, the partition must not wait for its lease's TTL."""
    registry = _Registry({"s1": 60, "s2": 60, "s3": 60, "s4": 60})
    holder = assign(8, list(registry.members))[0]
    rest = [n for n in registry.members if n != holder]
    heir = assign(8, rest)[0]
    stand_ins = [n for n in ranking(0, rest) if n != heir]  # in the order they should step in

    def first_steal(node: str) -> float:
        spread = _spread(0, node, registry, [0.0])
        return next(t for t in (0.05 * k for k in range(100)) if spread.may_steal(holder, t))

    waits = [first_steal(n) for n in stand_ins]
    assert waits == sorted(set(waits)), waits  # one after another, never two at once
    assert waits[0] >= STAGGER / 2, "a stand-in raced the heir"
    assert all(_spread(0, n, registry, [0.0]).may_steal(holder, len(rest) * STAGGER) for n in stand_ins)


def test_a_holder_hands_over_only_to_a_warm_assignee_and_after_holding_a_while() -> None:
    registry = _Registry({"s1": 60, "s2": 60})
    owner = assign(8, ["s1", "s2"])[0]
    other = "s1" if owner == "s2" else "s2"
    now = [100.0]
    holder = _spread(0, other, registry, now)
    holder.took()
    assert not holder.hand_over(), "handed over right after taking the partition"
    now[0] += WARM_UP
    assert holder.hand_over()
    young = _Registry({other: 60, owner: 1})
    assert not _spread(0, other, young, now).hand_over(), "handed over to a server still warming up"
    assert not _spread(0, owner, registry, now).hand_over(), "the assignee handed over to itself"


def test_a_leaving_server_is_nobodys_assignee_so_its_partitions_are_taken_at_once() -> None:
    registry = _Registry({"s1": 60, "s2": 60, "s3": 60})
    owners = assign(8, ["s1", "s2", "s3"])
    leaving = owners[0]
    registry.members[leaving] = msgspec.structs.replace(registry.members[leaving], leaving=True)
    heir = assign(8, [n for n in ("s1", "s2", "s3") if n != leaving])[0]
    assert _spread(0, heir, registry, [0.0]).campaign_delay() == 0
