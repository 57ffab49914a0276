"""A run sent to a node that has just joined is not lost: it waits for the node in its queue.

Before, the first heartbeat went out before the agent subscribed to its run subject: a run sent to a node
that had just joined hit "no responders" and was recorded failed ("node ... is not reachable"), which a
loaded machine turned into a flaky failure of the agent tests. Now a node is a target only once the leader
has made its consumer of run requests, and a request waits there until the agent takes it.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import anyio
import nats
import nats.errors
import pytest

from dkron_nats.kv.buckets import RUNS_STREAM
from dkron_nats.subjects import run_consumer
from tests.harness import Node, finished, job, running, wait_for
from tests.integration.test_nats_defaults import mint

POINT = "after-first-heartbeat"


def _stopped(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"


async def _waiting_for(server: Node, node: str) -> int | None:
    """How many run requests wait in `node`'s consumer (None: it has no consumer yet)."""
    nc = await nats.connect(**server.nats_options())
    try:
        info = await nc.jetstream().consumer_info(RUNS_STREAM, run_consumer(node))
    except nats.errors.Error:
        return None
    finally:
        await nc.close()
    return int(info.num_pending or 0)


def test_a_run_sent_to_a_node_that_just_joined_waits_for_it(tmp_path: Path) -> None:
    failpoints = tmp_path / "failpoints"
    failpoints.mkdir()
    server = Node(tmp_path / "server", name="s1")
    with running(server):
        creds = mint(server, tmp_path / "worker7.creds", "agent", "worker7")
        args = ["--nats-url", server.nats_url, "--nats-creds", str(creds), "--tag", "agent=worker7"]
        env = {"DKRON_NATS_FAILPOINTS_DIR": str(failpoints)}
        agent = Node(tmp_path / "worker7", name="worker7", server=False, extra=args, env=env)
        (failpoints / POINT).touch()
        agent.start()
        assert agent.proc is not None
        try:
            wait_for(
                lambda: _stopped(agent.proc.pid) if agent.proc else None, 30, "the agent's first heartbeat"
            )
            assert [m["Name"] for m in server.get("/v1/members").json()] == ["s1", "worker7"]
            # The agent is paused right after its first heartbeat; the leader makes its consumer anyway.
            wait_for(lambda: anyio.run(_waiting_for, server, "worker7") is not None, 15, "its consumer")
            server.post("/v1/jobs", json=job("joined", command="echo hi", tags={"agent": "worker7"}))
            assert server.post("/v1/jobs/joined/run").status_code in (200, 202)
            wait_for(lambda: anyio.run(_waiting_for, server, "worker7") == 1, 15, "the run waiting for it")
            os.kill(agent.proc.pid, signal.SIGCONT)
            runs = wait_for(lambda: finished(server, "joined", 1), 30, "the run on the new agent")
            assert [r["success"] for r in runs] == [True], runs[0]["output"]
        finally:
            if agent.proc is not None and agent.proc.poll() is None:
                os.kill(agent.proc.pid, signal.SIGCONT)
            agent.stop()


pytestmark = pytest.mark.nats
