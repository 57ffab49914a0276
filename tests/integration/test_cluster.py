"""Three dkron-nats servers (embedded NATS clustered, R3) and two agents on one machine."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest

from dkron_nats.kv.buckets import (
    AUDIT_STREAM,
    BUCKET_NAMES,
    DECISIONS_STREAM,
    RESULTS_STREAM,
    RUNS_STREAM,
    TRIGGERS_STREAM,
)
from dkron_nats.kv.output import OUTPUT_STREAM
from dkron_nats.leader.placement import CHECK_INTERVAL, FIRST_CHECK_AFTER, HOT_CONSUMERS_OF
from tests.harness import Node, finished, free_port, job, shared_secret, spread_as_assigned, wait_for
from tests.sse import Event, events, output_of


def _servers(base: Path, extra_args: list[str], env: dict[str, str], count: int = 3) -> list[Node]:
    """Three (or `count`) servers whose embedded NATS cluster: with one cluster secret, unless `extra_args`
    give their own NATS credentials."""
    route_ports = [free_port() for _ in range(count)]
    if not {"--nats-user", "--nats-token", "--nats-secret-file"} & set(extra_args):
        extra_args = ["--nats-secret-file", str(shared_secret(base)), *extra_args]
    nodes = []
    for i in range(count):
        routes = [f"nats-route://127.0.0.1:{p}" for j, p in enumerate(route_ports) if j != i]
        extra = ["--nats-cluster-listen", f"127.0.0.1:{route_ports[i]}"]
        for route in routes:
            extra += ["--nats-routes", route]
        nodes.append(
            Node(
                base / f"s{i + 1}",
                name=f"s{i + 1}",
                extra=[*extra, "--lease-ttl", "10", *extra_args],
                env=env,
            )
        )
    return nodes


def _agent(base: Path, name: str, servers: list[Node], tags: list[str]) -> Node:
    extra = [arg for s in servers for arg in ("--nats-url", f"nats://127.0.0.1:{s.nats_port}")]
    extra += [arg for tag in tags for arg in ("--tag", tag)]
    return Node(base / name, name=name, server=False, extra=extra, nats_creds_from=servers[0])


def _lists_members(server: Node, count: int) -> Callable[[], bool]:
    """`count` members alive (a node that died stays listed as failed until it comes back)."""
    return lambda: sum(m["statusText"] == "alive" for m in server.get("/v1/members").json()) == count


STREAMS = [DECISIONS_STREAM, RUNS_STREAM, RESULTS_STREAM, OUTPUT_STREAM, TRIGGERS_STREAM, AUDIT_STREAM]


def leaders(servers: list[Node]) -> list[str]:
    """Servers that say they lead; stopped or unreachable ones are skipped."""
    found = []
    for server in servers:
        if server.proc is None:
            continue
        try:
            if server.get("/health").json().get("leader"):
                found.append(server.name)
        except httpx.HTTPError:
            continue
    return found


@contextmanager
def three_servers_two_agents(
    base: Path, server_args: tuple[str, ...] = (), server_env: dict[str, str] | None = None
) -> Iterator[dict[str, Node]]:
    """s1-s3 (embedded NATS clustered, R3) and agents web1, web2 tagged role=web; stopped on exit."""
    servers = _servers(base, list(server_args), server_env or {})
    agents = [_agent(base, "web1", servers, ["role=web"]), _agent(base, "web2", servers, ["role=web"])]
    nodes = servers + agents
    try:
        for node in nodes:
            node.start()
        wait_for(lambda: len(leaders(servers)) == 1, timeout=60, what="one leader among three servers")
        for server in servers:
            wait_for(_lists_members(server, 5), timeout=30, what=f"5 members on {server.name}")
        yield {n.name: n for n in nodes}
    finally:
        for node in nodes:
            node.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Node]]:
    with three_servers_two_agents(tmp_path_factory.mktemp("cluster")) as nodes:
        yield nodes


def _servers_of(cluster: dict[str, Node]) -> list[Node]:
    return [cluster[n] for n in ("s1", "s2", "s3")]


def test_one_leader_and_every_server_lists_all_members(cluster: dict[str, Node]) -> None:
    servers = _servers_of(cluster)
    assert len(leaders(servers)) == 1
    leader_names = {s.get("/v1/leader").json()["Name"] for s in servers}
    assert leader_names == set(leaders(servers))
    for server in servers:
        members = {m["Name"]: m for m in server.get("/v1/members").json()}
        assert set(members) == {"s1", "s2", "s3", "web1", "web2"}
        assert members["web1"]["Tags"]["role"] == "web"
        assert members["s1"]["Tags"]["server"] == "true"
        assert "server" not in members["web2"]["Tags"]
        assert server.get("/v1/isleader").status_code in (200, 404)


def test_every_api_call_works_on_every_server(cluster: dict[str, Node]) -> None:
    s1, s2, s3 = _servers_of(cluster)
    assert s2.post("/v1/jobs", json=job("anywhere", "@manually", "echo hi")).status_code == 201
    wait_for(lambda: s3.get("/v1/jobs/anywhere").status_code == 200, timeout=5, what="the job on s3")
    assert s1.post("/v1/jobs/anywhere/run").status_code == 200
    runs = wait_for(lambda: finished(s3, "anywhere", 1), timeout=20, what="the run, seen from s3")
    assert runs[0]["success"] is True
    assert s1.get(f"/v1/jobs/anywhere/executions/{runs[0]['id']}").json()["output"] == "hi\n"
    assert s3.post("/v1/jobs/anywhere/toggle").json()["disabled"] is True
    assert s2.request("DELETE", "/v1/jobs/anywhere").status_code == 200
    wait_for(lambda: s1.get("/v1/jobs/anywhere").status_code == 404, timeout=5, what="the delete on s1")


def test_every_bucket_and_stream_is_replicated_on_three_nats_servers(cluster: dict[str, Node]) -> None:
    async def replicas() -> dict[str, tuple[int, int]]:
        nc = await nats.connect(**cluster["s2"].nats_options())
        try:
            js = nc.jetstream()
            found = {}
            for name in [f"KV_{bucket}" for bucket in BUCKET_NAMES] + STREAMS:
                info = await js.stream_info(name)
                peers = 1 + len(info.cluster.replicas or []) if info.cluster else 1
                found[name] = (info.config.num_replicas or 1, peers)
            return found
        finally:
            await nc.close()

    found = asyncio.run(replicas())
    assert found == dict.fromkeys(found, (3, 3)), found
    assert len(found) == len(BUCKET_NAMES) + len(STREAMS)


def test_no_raft_group_is_led_by_the_leaders_own_nats_server(cluster: dict[str, Node]) -> None:
    """The leader's embedded nats-server dies with it: a stream or consumer it led would hold the takeover
    up while it elects a leader elsewhere. So the leader moves them off (leader/placement.py), again every
    CHECK_INTERVAL (partitions moving to it make consumers there)."""
    spread_as_assigned(_servers_of(cluster))  # the leader of now stays the leader
    leader = leaders(_servers_of(cluster))[0]

    async def led_by_leader() -> list[str]:
        nc = await nats.connect(**cluster["s2"].nats_options())
        try:
            js = nc.jetstream()
            led = []
            for stream in await js.streams_info():
                name = stream.config.name
                if stream.cluster and stream.cluster.leader == leader:
                    led.append(f"stream {name}")
                if name in HOT_CONSUMERS_OF:
                    led += [
                        f"consumer {c.name}"
                        for c in await js.consumers_info(name or "")
                        if c.cluster and c.cluster.leader == leader
                    ]
            return led
        finally:
            await nc.close()

    still: list[str] = []

    def moved_off() -> bool:
        still[:] = asyncio.run(led_by_leader())
        return not still

    try:
        wait_for(
            moved_off,
            timeout=FIRST_CHECK_AFTER + CHECK_INTERVAL + 10,
            what=f"{leader}'s nats-server to lead nothing",
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}; it still leads {still}") from None


def _run_and_collect(server: Node, name: str, tags: dict[str, str], expect: int) -> list[dict[str, Any]]:
    assert server.post("/v1/jobs", json=job(name, "@manually", "hostname", tags=tags)).status_code == 201
    server.post(f"/v1/jobs/{name}/run")
    runs = wait_for(lambda: finished(server, name, expect), timeout=20, what=f"{expect} runs of {name}")
    server.request("DELETE", f"/v1/jobs/{name}")
    return runs


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ({"role": "web"}, {"web1", "web2"}),
        ({"role": "web:2"}, {"web1", "web2"}),
        ({"server": "true"}, {"s1", "s2", "s3"}),
        ({"server": "true:2"}, 2),
        ({"role": "web:1"}, 1),
    ],
)
def test_targeting(cluster: dict[str, Node], tags: dict[str, str], expected: set[str] | int) -> None:
    server = cluster["s1"]
    count = expected if isinstance(expected, int) else len(expected)
    name = "target-" + "-".join(f"{k}-{v}".replace(":", "x") for k, v in tags.items())
    runs = _run_and_collect(server, name, tags, count)
    nodes = [r["node_name"] for r in runs]
    assert len(nodes) == len(set(nodes)) == count, f"not {count} distinct nodes: {nodes}"
    if isinstance(expected, set):
        assert set(nodes) == expected
    else:
        candidates = {"s1", "s2", "s3"} if "server" in tags else {"web1", "web2"}
        assert set(nodes) <= candidates
    assert all(r["success"] for r in runs)
    assert len({r["group"] for r in runs}) == 1


def test_no_matching_node_gives_a_failed_execution_with_the_reason(cluster: dict[str, Node]) -> None:
    server = cluster["s2"]
    server.post("/v1/jobs", json=job("nobody-db", "@every 1s", tags={"role": "db"}))
    runs = wait_for(lambda: finished(server, "nobody-db", 1), timeout=20, what="the failed record")
    server.request("DELETE", "/v1/jobs/nobody-db")
    assert runs[0]["success"] is False
    assert "role=db" in runs[0]["output"]


def test_live_output_read_on_another_server_and_a_cancel_sent_there(cluster: dict[str, Node]) -> None:
    """The agent web1 runs the job; s2 serves its live output and s3 cancels it."""
    s1, s2, s3 = _servers_of(cluster)
    command = "for i in $(seq 1 30); do echo line-$i; sleep 0.1; done; sleep 300"
    body = job("remote-live", "@manually", command, tags={"role": "web:1"})
    body["executor_config"]["shell"] = "true"
    s1.post("/v1/jobs", json=body)
    s1.post("/v1/jobs/remote-live/run")
    run = wait_for(
        lambda: (
            [e for e in s2.get("/v1/jobs/remote-live/executions").json() if e["status"] == "running"] or None
        ),
        timeout=20,
        what="the run",
    )[0]
    url = f"{s2.url}/v1/jobs/remote-live/executions/{run['id']}/output"
    seen: list[Event] = []
    reader = threading.Thread(target=lambda: seen.extend(events(url, timeout=60)), daemon=True)
    reader.start()
    expected = "".join(f"line-{i}\n" for i in range(1, 31))
    wait_for(lambda: output_of(seen) == expected, timeout=20, what="all thirty lines, live, on s2")
    assert reader.is_alive(), "the stream ended while the job still runs"
    assert s3.post(f"/v1/jobs/remote-live/executions/{run['id']}/cancel").status_code == 202
    reader.join(timeout=30)
    assert not reader.is_alive()
    assert seen[-1].kind == "end"
    assert seen[-1].data["success"] is False
    assert "cancelled" in output_of(seen)
    s1.request("DELETE", "/v1/jobs/remote-live")
