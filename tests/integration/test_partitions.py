"""Partitioned scheduling (`--partitions N`): every partition has one owner, its jobs run, and a killed
owner's partitions are taken over by the servers that remain, with no slot run twice."""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
import pytest

from dkron_nats.kv.buckets import LEADER
from dkron_nats.leader.lease import LeaseRecord
from dkron_nats.leader.partitions import assign
from dkron_nats.models import decode
from dkron_nats.subjects import Partition, partition_of
from dkron_nats.timefmt import parse_time
from tests.harness import Node, executions, finished, job, running, spread_as_assigned, wait_for
from tests.integration.test_cluster import _servers, leaders

SECOND = timedelta(seconds=1)


def _at(text: str) -> datetime:
    parsed = parse_time(text)
    assert parsed is not None, text
    return parsed


def _named_in(partition: int, count: int, prefix: str) -> str:
    """The first `<prefix><i>` job name that falls into `partition`."""
    return next(f"{prefix}{i}" for i in itertools.count() if partition_of(f"{prefix}{i}", count) == partition)


def _owners(node: Node, count: int) -> dict[int, str]:
    """Each held partition's owner, from its lease (none while the cluster is still forming)."""

    async def read() -> dict[int, str]:
        nc = await nats.connect(**node.nats_options())
        try:
            kv = await nc.jetstream().key_value(LEADER)
            found = {}
            for index in range(count):
                try:
                    entry = await kv.get(Partition(index, count).lease_key)
                except nats.js.errors.KeyNotFoundError:
                    continue
                if entry.value:
                    found[index] = decode(entry.value, LeaseRecord).node
            return found
        finally:
            await nc.close()

    try:
        return asyncio.run(read())
    except (nats.errors.Error, OSError):
        return {}


def _trigger(node: Node, name: str) -> dict[str, str]:
    async def send() -> dict[str, str]:
        nc = await nats.connect(**node.nats_options())
        try:
            reply = await nc.request(f"dkron.trigger.{name}", b"", timeout=10)
            answer: dict[str, str] = json.loads(reply.data)
            return answer
        finally:
            await nc.close()

    return asyncio.run(send())


def test_one_server_owns_every_partition_and_runs_each_ones_jobs(tmp_path: Path) -> None:
    with running(Node(tmp_path / "n1", extra=["--partitions", "4"])) as node:
        wait_for(lambda: _owners(node, 4) == dict.fromkeys(range(4), "n1"), 20, "n1 to own all 4")
        ticking = [_named_in(p, 4, "tick") for p in range(4)]
        manual = [_named_in(p, 4, "manual") for p in range(4)]
        triggered = [_named_in(p, 4, "triggered") for p in range(4)]
        for name in ticking:
            assert node.post("/v1/jobs", json=job(name, "@every 1s")).status_code == 201
        for name in manual + triggered:
            assert node.post("/v1/jobs", json=job(name)).status_code == 201
        for name in manual:
            assert node.post(f"/v1/jobs/{name}/run").status_code == 200, name
        for name in triggered:
            assert _trigger(node, name)["status"] == "accepted", name
        for name in ticking:
            wait_for(functools.partial(finished, node, name, 2), 20, f"two runs of {name}")
        for name in manual + triggered:
            runs = wait_for(functools.partial(finished, node, name, 1), 20, f"the run of {name}")
            assert runs[0]["success"] is True
        rows = node.get("/v1/partitions").json()
        assert [(r["partition"], r["owner"], r["jobs"]) for r in rows] == [(p, "n1", 3) for p in range(4)]
        assert all(r["term"] > 0 and r["lag_ms"] >= 0 for r in rows), rows
        metrics = node.get("/metrics").text
        assert "dkron_partitions_owned 4.0" in metrics
        for index in range(4):
            assert f'dkron_partition_owned{{partition="{index}"}} 1.0' in metrics
            assert f'dkron_decisions_total{{partition="{index}"}}' in metrics
        assert node.get("/v1/leader").json()["Name"] == "n1"


def test_a_parent_hands_its_ended_launch_to_the_owner_of_each_childs_partition(tmp_path: Path) -> None:
    """The children are in other partitions than their parents: each still runs once per parent launch
    (a `parent_job` child after a success; a `depends_on` child once both parents in two partitions ended)."""
    with running(Node(tmp_path / "n1", extra=["--partitions", "4"])) as node:
        first, second = _named_in(0, 4, "parent"), _named_in(1, 4, "parent")
        child = _named_in(2, 4, "child")
        fan_in = _named_in(3, 4, "fanin")
        for name in (first, second):
            assert node.post("/v1/jobs", json=job(name)).status_code == 201
        assert node.post("/v1/jobs", json=job(child, "", parent_job=first)).status_code == 201
        deps = [{"job": first, "on": "success"}, {"job": second, "on": "always"}]
        assert node.post("/v1/jobs", json=job(fan_in, "", depends_on=deps)).status_code == 201
        assert node.post(f"/v1/jobs/{first}/run").status_code == 200
        wait_for(functools.partial(finished, node, child, 1), 20, f"{child} after {first}")
        assert node.post(f"/v1/jobs/{second}/run").status_code == 200
        wait_for(functools.partial(finished, node, fan_in, 1), 20, f"{fan_in} after both parents")
        assert node.post(f"/v1/jobs/{first}/run").status_code == 200
        wait_for(functools.partial(finished, node, child, 2), 20, f"{child} after the second {first}")
        wait_for(functools.partial(finished, node, first, 2), 20, f"the second run of {first}")
        assert len(executions(node, fan_in)) == 1, "the fan-in child ran with one parent only"
        assert [len(executions(node, name)) for name in (child, first)] == [2, 2]


def _slots_once_and_on_time(node: Node, name: str, since: datetime, until: datetime) -> list[str]:
    """What is wrong with the job's `@every 1s` slots between `since` and `until`: a slot missed, not
    finished or run twice, a gap between slots, a run more than a second late."""
    runs = [
        e for e in executions(node, name) if e["scheduled_at"] and since <= _at(e["scheduled_at"]) <= until
    ]
    problems = [
        f"{e['scheduled_at']}: {e['status']} on {e.get('node_name')}: {(e.get('output') or '')[-300:]!r}"
        for e in runs
        if e["status"] != "success"
    ]
    slots = sorted(_at(e["scheduled_at"]) for e in runs)
    problems += [f"{a} ran twice" for a, b in itertools.pairwise(slots) if a == b]
    problems += [f"no slot between {a} and {b}" for a, b in itertools.pairwise(slots) if b - a > SECOND]
    for e in runs:
        late = _at(e["started_at"]) - _at(e["scheduled_at"])
        if late > SECOND:
            problems.append(f"{e['scheduled_at']} started {late.total_seconds():.2f}s late")
    return problems


def test_a_server_joining_and_one_leaving_move_partitions_with_no_slot_lost_or_late(tmp_path: Path) -> None:
    """A fourth server takes its share once it is warm; a server stopped gracefully hands its share over
    (stop, record, release): every slot of every partition runs once, none more than a second late."""
    servers = _servers(tmp_path, ["--partitions", "6"], {}, count=4)
    s1, s2, s3, s4 = servers
    try:
        for server in (s1, s2, s3):
            server.start()
        names = [s.name for s in servers]
        settled = _settling(s1, 6)
        wait_for(functools.partial(settled, names[:3]), 60, "the partitions spread over three servers")
        ticking = [_named_in(p, 6, "tick") for p in range(6)]
        for name in ticking:
            body = job(name, "@every 1s", tags={"server": "true:1"})
            assert s1.post("/v1/jobs", json=body).status_code == 201
        for name in ticking:
            wait_for(functools.partial(finished, s1, name, 2), 30, f"two runs of {name}")
        since = datetime.now(UTC)
        s4.start()
        wait_for(functools.partial(settled, names), 60, "s4 to take its share")
        s2.stop()
        # A holder keeps what it took for 10 s, so a partition s4 took may move on only after that.
        wait_for(functools.partial(settled, [s1.name, s3.name, s4.name]), 60, "s2's share to move")
        for name in ticking:
            wait_for(functools.partial(finished, s1, name, 5), 30, f"{name} to go on")
        until = datetime.now(UTC) - 2 * SECOND  # the last slots' results may still be on their way

        def problems() -> list[str]:
            return [f"{n}: {p}" for n in ticking for p in _slots_once_and_on_time(s1, n, since, until)]

        try:
            wait_for(lambda: not problems(), 15, "every slot since the join accounted for")
        except AssertionError:
            raise AssertionError("\n".join(problems())) from None
        for name in ticking:
            runs = [e for e in executions(s1, name) if since <= _at(e["scheduled_at"]) <= until]
            assert len(runs) >= (until - since).total_seconds() - 1, f"{name}: slots missing"
    finally:
        for server in servers:
            server.stop()


def _settling(node: Node, count: int) -> Callable[[list[str]], bool]:
    def settled(live: list[str]) -> bool:
        return _owners(node, count) == assign(count, live)

    return settled


@pytest.fixture
def three_servers(tmp_path: Path) -> Iterator[list[Node]]:
    servers = _servers(tmp_path, ["--partitions", "6"], {})
    try:
        for server in servers:
            server.start()
        wait_for(lambda: len(leaders(servers)) == 1, 60, "an owner of partition 0")
        yield servers
    finally:
        for server in servers:
            server.stop()


def test_three_servers_share_the_partitions_and_take_over_a_killed_ones(three_servers: list[Node]) -> None:
    s1, s2, s3 = three_servers
    spread = assign(6, [s.name for s in three_servers])
    assert sorted(Counter(spread.values()).values()) == [2, 2, 2]
    wait_for(
        functools.partial(_settling(s1, 6), [s.name for s in three_servers]),
        60,
        "two partitions on each server, as assigned (a joining server waits 10 s to take its own)",
    )
    listed = {row["partition"]: row["owner"] for row in s2.get("/v1/partitions").json()}
    assert listed == spread

    def members_show_two_each() -> bool:
        return {m["Name"]: m["Partitions"] for m in s3.get("/v1/members").json()} == dict.fromkeys(
            ("s1", "s2", "s3"), 2
        )

    wait_for(members_show_two_each, 15, "/v1/members to show two partitions on each server")
    ticking = [_named_in(p, 6, "tick") for p in range(6)]
    for name in ticking:
        body = job(name, "@every 1s", tags={"server": "true:1"})  # one run per slot, on any server
        assert s2.post("/v1/jobs", json=body).status_code == 201
    for name in ticking:
        wait_for(functools.partial(finished, s1, name, 2), 30, f"two runs of {name}")

    victim = next(s for s in three_servers if s.name == spread[0])  # "the leader" too
    lost = [p for p, owner in spread.items() if owner == victim.name]
    rest = [s for s in three_servers if s is not victim]
    counts = {name: len(executions(rest[0], name)) for name in ticking}
    victim.kill()

    def taken_over() -> bool:
        owners = _owners(rest[0], 6)
        return len(owners) == 6 and victim.name not in owners.values()

    wait_for(taken_over, 15, f"the partitions {lost} of {victim.name} taken over")
    for name in ticking:
        wait_for(functools.partial(finished, rest[0], name, counts[name] + 3), 30, f"{name} to go on")
    for name in ticking:
        groups = Counter(e["group"] for e in executions(rest[0], name) if e["status"] != "missed")
        twice = [group for group, seen in groups.items() if seen > 1]
        assert not twice, f"{name}: slots {twice} ran twice"
    assert len(leaders(rest)) == 1


def _names_per_partition(sizes: dict[int, int], count: int) -> list[str]:
    """Job names, `sizes[p]` of them in partition p."""
    names: list[str] = []
    wanted = dict(sizes)
    for i in itertools.count():
        if not any(wanted.values()):
            return names
        partition = partition_of(f"bal{i}", count)
        if wanted.get(partition, 0) > 0:
            wanted[partition] -= 1
            names.append(f"bal{i}")
    raise AssertionError("unreachable")


def test_partitions_move_so_each_server_holds_a_third_of_the_jobs(
    three_servers: list[Node],
) -> None:
    """Two partitions each, as assigned by number; but the two of one server hold half the jobs. The owner of
    partition 0 plans a swap, and the servers hand the two partitions over: each then holds a third."""
    s1, s2, _ = three_servers
    spread_as_assigned(three_servers)  # every server up, and the partitions where their number says
    names = sorted(s.name for s in three_servers)
    plain = assign(6, names)
    heavy, light, middle = (names[0], names[1], names[2])
    sizes = {}
    for partition, owner in plain.items():
        sizes[partition] = {heavy: 30, light: 10, middle: 20}[owner]
    for name in _names_per_partition(sizes, 6):
        assert s1.post("/v1/jobs", json=job(name)).status_code == 201

    def balanced() -> list[dict[str, object]] | None:
        rows: list[dict[str, object]] = s2.get("/v1/partitions").json()
        if any(row["owner"] != row["assignee"] for row in rows) or all(
            row["owner"] == plain[int(str(row["partition"]))] for row in rows
        ):
            return None
        return rows

    rows = wait_for(balanced, 60, "the partitions planned by jobs and handed over")
    held = Counter[str]()
    for row in rows:
        held[str(row["owner"])] += int(str(row["jobs"]))
    assert held == dict.fromkeys(names, 40), held
    assert sorted(Counter(str(row["owner"]) for row in rows).values()) == [2, 2, 2]
