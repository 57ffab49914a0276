"""Dispatch on tag subjects: a `value:N` launch is taken by matching agents that have room, so a busy node
leaves its lane to an idle one; a node that matches no job's tags receives none of its requests."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from tests.harness import Node, finished, job, running, wait_for

pytestmark = pytest.mark.nats


def _agent(base: Path, name: str, server: Node, role: str) -> Node:
    extra = ["--nats-url", server.nats_url, "--tag", f"role={role}", "--max-concurrent-executions", "1"]
    return Node(base / name, name=name, server=False, extra=extra, nats_creds_from=server)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[Node, dict[str, Node]]]:
    """A server (it runs nothing tagged) and three agents with one execution slot each: web1, web2, db1."""
    with running(Node(tmp_path / "s1", name="s1")) as server:
        agents = {
            name: _agent(tmp_path, name, server, role)
            for name, role in (("web1", "web"), ("web2", "web"), ("db1", "db"))
        }
        try:
            for agent in agents.values():
                agent.start()
            wait_for(lambda: len(server.get("/v1/members").json()) == 4, timeout=30, what="four members")
            yield server, agents
        finally:
            for agent in agents.values():
                agent.stop()


def test_a_busy_node_leaves_its_lane_to_an_idle_one(
    fleet: tuple[Node, dict[str, Node]], tmp_path: Path
) -> None:
    server, _ = fleet
    release = tmp_path / "release"
    hold = f"while [ ! -f {release} ]; do sleep 0.05; done"
    try:
        spec = job("hold", tags={"role": "web:1"}, executor_config={"command": hold, "shell": "true"})
        server.post("/v1/jobs", json=spec).raise_for_status()
        server.post("/v1/jobs", json=job("quick", "@manually", "echo quick", tags={"role": "web:1"}))
        assert server.post("/v1/jobs/hold/run").status_code == 200
        busy = wait_for(lambda: _running_on(server, "hold"), timeout=20, what="hold running")
        idle = ({"web1", "web2"} - {busy}).pop()
        for n in range(1, 4):
            assert server.post("/v1/jobs/quick/run").status_code == 200
            runs = wait_for(partial(finished, server, "quick", n), timeout=20, what=f"quick run {n}")
            # Each lane went to the node with a free slot, never waiting for the busy one.
            assert {r["node_name"] for r in runs} == {idle}, runs
            assert all(r["success"] for r in runs), runs
    finally:
        release.touch()
    held = wait_for(lambda: finished(server, "hold", 1), timeout=20, what="hold finished")
    assert held[0]["success"], held
    assert held[0]["node_name"] == busy


def test_every_matching_node_runs_a_launch_once_and_no_other_node_sees_it(
    fleet: tuple[Node, dict[str, Node]],
) -> None:
    server, agents = fleet
    server.post("/v1/jobs", json=job("web-all", "@manually", "echo hi", tags={"role": "web"}))
    assert server.post("/v1/jobs/web-all/run").status_code == 200
    runs = wait_for(lambda: finished(server, "web-all", 2), timeout=20, what="the run on both web nodes")
    assert sorted(r["node_name"] for r in runs) == ["web1", "web2"]
    assert len({r["group"] for r in runs}) == 1
    # db1's consumer takes only its own subjects: the request never reached it.
    assert "web-all" not in agents["db1"].logs()
    assert len(server.get("/v1/jobs/web-all/executions").json()) == 2


def _running_on(server: Node, name: str) -> str | None:
    runs = server.get(f"/v1/jobs/{name}/executions").json()
    return next((r["node_name"] for r in runs if r["status"] == "running" and r["started_at"]), None)


def test_an_agent_killed_between_its_claim_and_its_ack_runs_nothing_twice(tmp_path: Path) -> None:
    """The agent dies (kill -9 at the failpoint `run-claimed`) after claiming a run and before acknowledging
    its request. Its next process gets the request again and finds the claim: it must not run it; the
    execution it never ran ends as failed ("agent lost", the node restarted) and is counted once."""
    failpoints = tmp_path / "failpoints"
    failpoints.mkdir()
    with running(Node(tmp_path / "s1", name="s1")) as server:
        extra = ["--nats-url", server.nats_url, "--tag", "role=web"]
        env = {"DKRON_NATS_FAILPOINTS_DIR": str(failpoints)}
        agent = Node(
            tmp_path / "web1", name="web1", server=False, extra=extra, env=env, nats_creds_from=server
        )
        marker = tmp_path / "ran"
        try:
            agent.start()
            wait_for(lambda: len(server.get("/v1/members").json()) == 2, timeout=30, what="the agent")
            spec = job("once", tags={"role": "web"}, executor_config={"command": f"touch {marker}"})
            server.post("/v1/jobs", json=spec).raise_for_status()
            (failpoints / "run-claimed").touch()
            assert server.post("/v1/jobs/once/run").status_code == 200
            assert agent.proc is not None
            wait_for(lambda: agent.proc is not None and agent.proc.poll() is not None, 30, "the agent killed")
            agent.proc = None
            agent.start()  # the same node, a new process, the same consumer
            runs = wait_for(lambda: finished(server, "once", 1), timeout=30, what="the execution concluded")
        finally:
            agent.stop()
        state = server.get("/v1/jobs/once").json()
    assert not marker.exists(), "the claimed run was run by the next process"
    assert len(runs) == 1, runs
    assert runs[0]["success"] is False
    assert "agent lost" in runs[0]["output"], runs[0]["output"]
    assert (state["success_count"], state["error_count"]) == (0, 1)
