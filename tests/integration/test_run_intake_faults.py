"""Faults while an agent takes a run request, against a real nats-server and a real leader lease."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import anyio
import pytest
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError
from nats.js import JetStreamContext
from nats.js.api import ConsumerInfo

from dkron_nats.agent.executor import ExecutionContext, Executor, ExecutorResult, OutputSink
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


def _agent(cluster: Solo, executor: Executor, max_concurrent_executions: int = 0) -> Agent:
    js = cluster.nc.jetstream()
    return Agent(
        cluster.nc,
        js,
        NODE,
        ExecutionStore(cluster.buckets.executions, js),
        PluginRegistry({executor.name: executor}),
        shutdown_grace=5,
        lease_kv=cluster.buckets.leader,
        max_concurrent_executions=max_concurrent_executions,
    )


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
    agent = _agent(cluster, ShellExecutor())
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


class Instant:
    """An executor that succeeds at once: what is measured is the intake, not the runs."""

    name = "instant"

    def validate(self, config: Mapping[str, str]) -> None:
        pass

    async def execute(
        self, config: Mapping[str, str], ctx: ExecutionContext, output: OutputSink
    ) -> ExecutorResult:
        return ExecutorResult(success=True)


async def test_an_agent_takes_many_more_requests_than_one_pull_asks_for_without_pausing(
    cluster: Solo,
) -> None:
    """A thousand requests in the queue: the agent asks for more as it takes them. (It once counted the
    credit of a pull by the subject of what it delivered, which is the request's stream subject, so after the
    first 256 it waited about ten seconds per batch.)"""
    await cluster.make_run_consumer(NODE)
    agent = _agent(cluster, Instant())
    finished: set[str] = set()

    async def on_result(msg: Msg) -> None:
        finished.add(decode(msg.data, ExecutionResult).execution.id)

    group = to_ns(utcnow())
    requests = [
        RunRequest(
            execution=Execution(
                id=execution_id(group + i, NODE),
                job_name="many",
                group=group + i,
                node_name=NODE,
                fence=cluster.lease.fence,
            ),
            job=JobSpec(name="many", executor="instant"),
        )
        for i in range(1000)
    ]
    results = await cluster.nc.subscribe(result_subject(NODE), cb=on_result)
    for request in requests:
        await cluster.send_run(request)
    async with anyio.create_task_group() as tg:
        await tg.start(agent.run)
        started = anyio.current_time()
        await wait_for_async(lambda: _all_in(finished, 1000), deadline=60, what="a thousand results")
        took = anyio.current_time() - started
        agent.stop()
    await results.unsubscribe()
    assert took < 8, f"the agent took {took:.1f}s for a thousand instant runs: it waited between pulls"


async def _all_in(finished: set[str], count: int) -> bool:
    return len(finished) >= count


async def test_an_agent_whose_consumer_is_gone_waits_for_it_without_a_storm_of_pulls(
    cluster: Solo, tmp_path: Path
) -> None:
    """The leader removes the consumer of a node it takes for gone (a restart, a pause past the member TTL)
    while the node is in fact alive. A pull sent then is answered at once (503: no responders); pulling again
    at once made a storm that starved the agent's own process and the NATS server (a restarted leader missed
    its lease renewals). It must wait for its consumer, then take what it is sent."""
    await cluster.make_run_consumer(NODE)
    js = cluster.nc.jetstream()
    agent = _agent(cluster, ShellExecutor(), max_concurrent_executions=1)
    finished: list[Execution] = []

    async def on_result(msg: Msg) -> None:
        finished.append(decode(msg.data, ExecutionResult).execution)

    go = tmp_path / "go"
    results = await cluster.nc.subscribe(result_subject(NODE), cb=on_result)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(agent.run)
            holding = _request(cluster, f"sh -c 'while [ ! -f {go} ]; do sleep 0.05; done'")
            await cluster.send_run(holding)
            await wait_for_async(lambda: _running(agent), what="the slot taken")
            # No pull is out (no room); the consumer goes; the slot frees, and the agent pulls again.
            await js.delete_consumer(RUNS_STREAM, run_consumer(NODE))
            before = cluster.nc.stats["out_msgs"]
            go.touch()
            await anyio.sleep(3)
            sent = cluster.nc.stats["out_msgs"] - before
            await cluster.make_run_consumer(NODE)
            request = _request(cluster, "echo back")
            await cluster.send_run(request)
            await wait_for_async(
                lambda: _have(finished, request.execution.id), what="a run on the new consumer"
            )
            agent.stop()
    finally:
        go.touch()
    await results.unsubscribe()
    assert sent < 100, f"{sent} messages in 3 s while the consumer was gone: a storm of pulls"


async def _running(agent: Agent) -> bool:
    return bool(agent.running_keys())


async def test_a_run_claimed_as_the_agent_stops_still_runs(
    cluster: Solo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen in CI (a server stopped gracefully while a slot's run request reached it): the stop cancelled the
    claim in progress after NATS had stored it, so the claim stood with no run behind it and the slot was
    ruled lost ("failed") later. A stopping agent lets its claims finish and runs what it claimed."""
    await cluster.make_run_consumer(NODE)
    agent = _agent(cluster, ShellExecutor())
    finished: list[Execution] = []

    async def on_result(msg: Msg) -> None:
        finished.append(decode(msg.data, ExecutionResult).execution)

    real_claim, written = ExecutionStore.claim, anyio.Event()

    async def slow_reply(store: ExecutionStore, execution: Execution) -> int | None:
        revision = await real_claim(store, execution)
        written.set()
        await anyio.sleep(0.5)  # the reply still on its way when the stop comes
        return revision

    monkeypatch.setattr(ExecutionStore, "claim", slow_reply)
    results = await cluster.nc.subscribe(result_subject(NODE), cb=on_result)
    request = _request(cluster, "echo claimed")
    async with anyio.create_task_group() as tg:
        await tg.start(agent.run)
        await cluster.send_run(request)
        with anyio.fail_after(10):
            await written.wait()
        agent.stop()
    await wait_for_async(lambda: _have(finished, request.execution.id), what="the claimed run's result")
    await results.unsubscribe()
    [ran] = [ex for ex in finished if ex.id == request.execution.id]
    assert ran.success
    assert ran.output == "claimed\n"
