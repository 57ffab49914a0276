"""A node becomes a target (its member record appears) only once it listens for run requests.

Before, the first heartbeat went out before the agent subscribed to its run subject: a run sent to a node
that had just joined hit "no responders" and was recorded failed ("node ... is not reachable"), which a
loaded machine turned into a flaky failure of the agent tests.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import anyio
import nats
import nats.errors
import pytest

from dkron_nats.subjects import run_subject
from tests.harness import Node, finished, job, running, wait_for
from tests.integration.test_nats_defaults import mint

POINT = "after-first-heartbeat"


def _stopped(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"


async def _listening(server: Node, node: str) -> bool:
    """Whether a run request for `node` reaches a subscriber (the node is stopped, so none answers)."""
    nc = await nats.connect(**server.nats_options())
    try:
        await nc.request(run_subject(node), b"{}", timeout=1)
    except nats.errors.NoRespondersError:
        return False
    except nats.errors.TimeoutError:
        return True
    finally:
        await nc.close()
    return True


def test_a_node_is_listed_only_once_it_listens_for_run_requests(tmp_path: Path) -> None:
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
            assert anyio.run(_listening, server, "worker7"), "listed as a member, but not listening for runs"
            os.kill(agent.proc.pid, signal.SIGCONT)
            server.post("/v1/jobs", json=job("joined", command="echo hi", tags={"agent": "worker7"}))
            assert server.post("/v1/jobs/joined/run").status_code in (200, 202)
            runs = wait_for(lambda: finished(server, "joined", 1), 30, "the run on the new agent")
            assert [r["success"] for r in runs] == [True], runs[0]["output"]
        finally:
            if agent.proc is not None and agent.proc.poll() is None:
                os.kill(agent.proc.pid, signal.SIGCONT)
            agent.stop()


pytestmark = pytest.mark.nats
