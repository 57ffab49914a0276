"""Faults while an agent takes a run request, against a real nats-server and a real leader lease."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from nats.aio.msg import Msg

from dkron_nats.agent.registry import PluginRegistry
from dkron_nats.agent.runner import Agent
from dkron_nats.agent.shell import ShellExecutor
from dkron_nats.kv.executions import ExecutionStore, execution_id
from dkron_nats.leader.lease import SIGNATURE_HEADER
from dkron_nats.models import Execution, ExecutionResult, JobSpec, RunReply, RunRequest, decode, encode
from dkron_nats.subjects import result_subject, run_subject
from dkron_nats.timefmt import to_ns, utcnow
from tests.natsbackend import wait_for_async
from tests.solo import Solo, solo_store

pytestmark = pytest.mark.anyio

NODE = "agent-1"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Solo]:
    async with solo_store(tmp_path) as solo:
        yield solo


def _signed_request(cluster: Solo, command: str) -> tuple[bytes, dict[str, str], str]:
    """A run request of the current leader for NODE: its body, its headers and its execution id."""
    group = to_ns(utcnow())
    ex = Execution(
        id=execution_id(group, NODE), job_name="echo", group=group, node_name=NODE, fence=cluster.lease.fence
    )
    job = JobSpec(name="echo", executor="shell", executor_config={"command": command})
    body = encode(RunRequest(execution=ex, job=job))
    return body, {SIGNATURE_HEADER: cluster.lease.sign(body)}, ex.id


async def test_a_claimed_run_whose_request_cannot_be_answered_still_runs_and_the_agent_goes_on(
    cluster: Solo,
) -> None:
    """The agent claims a run, then fails to answer the request (here it has no reply subject; a closed or
    reconnecting connection fails the same way). The claim stands, so the leader waits for its result: the
    run must happen, and the agent must go on taking run requests."""
    js = cluster.nc.jetstream()
    agent = Agent(
        cluster.nc,
        js,
        NODE,
        ExecutionStore(cluster.buckets.executions, js),
        PluginRegistry({"shell": ShellExecutor()}),
        shutdown_grace=5,
        lease_kv=cluster.buckets.leader,
    )
    finished: dict[str, Execution] = {}

    async def on_result(msg: Msg) -> None:
        ex = decode(msg.data, ExecutionResult).execution
        finished[ex.id] = ex

    results = await cluster.nc.subscribe(result_subject(NODE), cb=on_result)
    async with anyio.create_task_group() as tg:
        await tg.start(agent.run)
        body, headers, unanswered = _signed_request(cluster, "echo unanswered")
        await cluster.nc.publish(run_subject(NODE), body, headers=headers)  # no reply subject
        body, headers, answered = _signed_request(cluster, "echo answered")
        reply = await cluster.nc.request(run_subject(NODE), body, timeout=10, headers=headers)
        assert decode(reply.data, RunReply) == RunReply(ok=True)
        await wait_for_async(lambda: _have(finished, unanswered, answered), what="both runs' results")
        assert agent.running_keys() == []
        agent.stop()
    await results.unsubscribe()
    assert finished[unanswered].success, finished[unanswered].output
    assert finished[unanswered].output == "unanswered\n"
    assert finished[answered].output == "answered\n"


async def _have(finished: dict[str, Execution], *ids: str) -> bool:
    return all(i in finished for i in ids)
