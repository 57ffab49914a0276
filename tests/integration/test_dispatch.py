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
