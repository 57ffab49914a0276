"""Faults while an agent takes a run request, against a real nats-server and a real leader lease."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError
from nats.js import JetStreamContext
from nats.js.api import ConsumerInfo

from dkron_nats.agent.registry import PluginRegistry
from dkron_nats.agent.runner import Agent
from dkron_nats.agent.shell import ShellExecutor
from dkron_nats.kv.buckets import RUNS_STREAM
from dkron_nats.kv.executions import ExecutionStore, execution_id
from dkron_nats.leader import runconsumers
from dkron_nats.models import Execution, ExecutionResult, JobSpec, RunRequest, decode
from dkron_nats.subjects import result_subject, run_consumer
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


def _request(cluster: Solo, command: str) -> RunRequest:
    """A run request of the current leader for NODE."""
    group = to_ns(utcnow())
    ex = Execution(
        id=execution_id(group, NODE), job_name="echo", group=group, node_name=NODE, fence=cluster.lease.fence
    )
    return RunRequest(
        execution=ex, job=JobSpec(name="echo", executor="shell", executor_config={"command": command})
    )


async def test_a_claimed_run_whose_request_cannot_be_acknowledged_runs_once_and_the_agent_goes_on(
    cluster: Solo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent claims a run, then fails to acknowledge the request (the connection dropped, say). The claim
    stands: the run must happen, the agent must go on taking run requests, and the request, delivered
    again once its acknowledgement is overdue, finds the claim and is dropped: the run happens once."""
    monkeypatch.setattr(runconsumers, "ACK_WAIT", 1.0)
    await cluster.make_run_consumer(NODE)
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
    finished: list[Execution] = []

    async def on_result(msg: Msg) -> None:
        finished.append(decode(msg.data, ExecutionResult).execution)

    real_ack, failed_once = Msg.ack, list[Msg]()

    async def ack_that_fails_once(msg: Msg) -> None:
        if not failed_once:
            failed_once.append(msg)
            raise ConnectionClosedError
        await real_ack(msg)

    monkeypatch.setattr(Msg, "ack", ack_that_fails_once)
    results = await cluster.nc.subscribe(result_subject(NODE), cb=on_result)
    async with anyio.create_task_group() as tg:
        await tg.start(agent.run)
        unacknowledged = _request(cluster, "echo unacknowledged")
        await cluster.send_run(unacknowledged)
        await wait_for_async(
            lambda: _have(finished, unacknowledged.execution.id), what="the first run's result"
        )
        acknowledged = _request(cluster, "echo acknowledged")
        await cluster.send_run(acknowledged)
        await wait_for_async(
            lambda: _have(finished, acknowledged.execution.id), what="the second run's result"
        )
        # Delivered again after the ack wait, and dropped: the consumer has nothing left unacknowledged.
        info = await wait_for_async(
            lambda: _all_acknowledged(js, NODE), deadline=15, what="the redelivered request acknowledged"
        )
        assert info.delivered is not None
        assert info.delivered.consumer_seq > info.delivered.stream_seq, "it was never delivered again"
        assert agent.running_keys() == []
        agent.stop()
    await results.unsubscribe()
    assert failed_once, "the acknowledgement never failed: the fault was not injected"
    by_id = {ex.id: ex for ex in finished}
    assert [ex.id for ex in finished].count(unacknowledged.execution.id) == 1, "it ran twice"
    assert by_id[unacknowledged.execution.id].output == "unacknowledged\n"
    assert by_id[acknowledged.execution.id].output == "acknowledged\n"


async def _all_acknowledged(js: JetStreamContext, node: str) -> ConsumerInfo | None:
    info = await js.consumer_info(RUNS_STREAM, run_consumer(node))
    return info if info.num_ack_pending == 0 and info.num_pending == 0 else None


async def _have(finished: list[Execution], *ids: str) -> bool:
    return all(any(ex.id == i for ex in finished) for i in ids)
