"""Per-node execution slots (`--max-concurrent-executions`): a node takes no more runs than it has slots for;
the others wait in the queue (DKRON_RUNS) and never fail for it, and what a stopping agent had no slot for is
still there for its next process."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
from nats.aio.msg import Msg

from dkron_nats.agent.registry import PluginRegistry
from dkron_nats.agent.runner import Agent
from dkron_nats.agent.shell import ShellExecutor
from dkron_nats.kv.buckets import RUNS_STREAM
from dkron_nats.kv.executions import ExecutionStore, execution_id
from dkron_nats.leader.lease import Lease
from dkron_nats.models import Execution, ExecutionResult, JobSpec, RunRequest, decode
from dkron_nats.subjects import result_subject, run_consumer
from dkron_nats.timefmt import to_ns, utcnow
from tests.harness import Node, executions, finished, job, running, wait_for
from tests.natsbackend import wait_for_async
from tests.solo import Solo, solo_store


@contextmanager
def _touched_at_the_end(path: Path) -> Iterator[None]:
    """Create `path` on the way out: the test's jobs wait for it, so none outlives a failed test."""
    try:
        yield
    finally:
        path.touch()


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _ledger(path: Path) -> list[tuple[float, str, str]]:
    """(time, start or end, execution id) of every line the job wrote, in time order."""
    lines = path.read_text().split("\n") if path.exists() else []
    events = [(float(at), what, ex_id) for what, ex_id, at in (line.split() for line in lines if line)]
    return sorted(events)


def _most_at_once(events: list[tuple[float, str, str]]) -> int:
    now = most = 0
    for _, what, _ in events:
        now += 1 if what == "start" else -1
        most = max(most, now)
    return most


def _member(node: Node, running: int, queued: int) -> dict[str, Any] | None:
    member: dict[str, Any] = node.get("/v1/members").json()[0]
    return member if (member["ExecutionsRunning"], member["ExecutionsQueued"]) == (running, queued) else None


def _gauges(node: Node) -> dict[str, float]:
    text = node.get("/metrics").text
    pattern = (
        r'^(dkron_execution_slots\{state="\w+"\}|dkron_executions_queued|dkron_executions_running) (\S+)$'
    )
    return {name: float(value) for name, value in re.findall(pattern, text, re.MULTILINE)}


def test_a_node_runs_no_more_than_its_slots_and_the_others_wait_in_the_queue(tmp_path: Path) -> None:
    ledger, release = tmp_path / "ledger", tmp_path / "release"
    command = (
        f'echo "start $DKRON_EXECUTION_ID $(date +%s.%N)" >> {ledger}; '
        f"while [ ! -f {release} ]; do sleep 0.05; done; sleep 0.3; "
        f'echo "end $DKRON_EXECUTION_ID $(date +%s.%N)" >> {ledger}'
    )
    node = Node(tmp_path / "n1", extra=["--max-concurrent-executions", "2"])
    with running(node), _touched_at_the_end(release):
        spec = job("slotted", command=command, executor_config={"command": command, "shell": "true"})
        assert node.post("/v1/jobs", json=spec).status_code == 201
        ids = []
        for _ in range(6):  # all sent at once: two run, four wait in the queue
            answer = node.post("/v1/jobs/slotted/run")
            assert answer.status_code == 200, answer.text
            ids += answer.headers["X-Execution-Ids"].split(",")
        member = wait_for(lambda: _member(node, 2, 0), timeout=20, what="/v1/members: 2 running")
        assert member["MaxConcurrentExecutions"] == 2
        gauges = _gauges(node)
        assert gauges['dkron_execution_slots{state="limit"}'] == 2
        assert gauges['dkron_execution_slots{state="used"}'] == 2
        assert gauges["dkron_executions_running"] == 2
        assert len(_ledger(ledger)) == 2, "more runs started than the node has slots"
        # The node took only what it had slots for: the others wait in the queue, with no record yet, and
        # none of them failed for lack of a slot.
        records = executions(node, "slotted")
        assert len(records) == 2, records
        assert all(e["status"] == "running" for e in records)
        released_at = datetime.now(UTC)
        release.touch()
        history = {e["id"]: e for e in wait_for(lambda: finished(node, "slotted", 6), timeout=30)}

    assert set(history) == set(ids)
    assert all(e["success"] and e["status"] == "success" for e in history.values()), history
    events = _ledger(ledger)
    assert len(events) == 12
    assert _most_at_once(events) == 2
    # The runs that waited started when a slot came free.
    waited = [e for e in history.values() if e["id"] not in {r["id"] for r in records}]
    assert all(_at(e["started_at"]) >= released_at for e in waited), waited


# ---------------------------------------------------------------------------------------------------------
# The agent alone, on a real nats-server: what waits for a slot stays in the queue across a stop.

NODE = "agent-1"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def solo(tmp_path: Path) -> AsyncIterator[Solo]:
    async with solo_store(tmp_path) as store:
        yield store


def _request(lease: Lease, command: str) -> RunRequest:
    group = to_ns(utcnow())
    ex = Execution(
        id=execution_id(group, NODE), job_name="slow", group=group, node_name=NODE, fence=lease.fence
    )
    spec = JobSpec(name="slow", executor="shell", executor_config={"command": command, "shell": "true"})
    return RunRequest(execution=ex, job=spec)


def _agent(solo: Solo, store: ExecutionStore) -> Agent:
    return Agent(
        solo.nc,
        solo.nc.jetstream(),
        NODE,
        store,
        PluginRegistry({"shell": ShellExecutor()}),
        shutdown_grace=30,
        lease_kv=solo.buckets.leader,
        max_concurrent_executions=1,
    )


@pytest.mark.anyio
async def test_a_run_an_agent_had_no_slot_for_waits_in_the_queue_for_its_next_process(
    solo: Solo, tmp_path: Path
) -> None:
    await solo.make_run_consumer(NODE)
    store = ExecutionStore(solo.buckets.executions, solo.nc.jetstream())
    finished_runs: dict[str, Execution] = {}

    async def on_result(msg: Msg) -> None:
        ex = decode(msg.data, ExecutionResult).execution
        finished_runs[ex.id] = ex

    marker, go = tmp_path / "ran", tmp_path / "go"
    first = _request(solo.lease, f"while [ ! -f {go} ]; do sleep 0.05; done; echo first")
    waiting = _request(solo.lease, f"touch {marker}; echo second")
    results = await solo.nc.subscribe(result_subject(NODE), cb=on_result)
    with _touched_at_the_end(go):  # the running job ends even if the test fails
        agent = _agent(solo, store)
        async with anyio.create_task_group() as tg:
            await tg.start(agent.run)
            await solo.send_run(first)
            await wait_for_async(lambda: _claimed(store, first), what="the first run claimed")
            await solo.send_run(waiting)
            # One slot, taken: the second request is not taken (no claim, nothing queued on the node).
            await wait_for_async(lambda: _waiting_in_queue(solo, 1), what="the second request in the queue")
            assert await store.get("slow", waiting.execution.id) is None
            assert agent.running_keys() == [ExecutionStore.key("slow", first.execution.id)]
            agent.stop()
            assert not marker.exists(), "a run the agent had no slot for must not start"
            go.touch()
            await wait_for_async(
                lambda: _have(finished_runs, first.execution.id), what="the first run's result"
            )
        assert first.execution.id in finished_runs
        assert waiting.execution.id not in finished_runs
        # The node's next process takes it from the queue.
        again = _agent(solo, store)
        async with anyio.create_task_group() as tg:
            await tg.start(again.run)
            await wait_for_async(
                lambda: _have(finished_runs, waiting.execution.id), what="the waiting run ran"
            )
            again.stop()
    await results.unsubscribe()
    assert finished_runs[first.execution.id].success, finished_runs[first.execution.id].output
    second = finished_runs[waiting.execution.id]
    assert second.success, second.output
    assert second.output == "second\n"


async def _claimed(store: ExecutionStore, request: RunRequest) -> bool:
    return await store.get(request.execution.job_name, request.execution.id) is not None


async def _waiting_in_queue(solo: Solo, count: int) -> bool:
    info = await solo.nc.jetstream().consumer_info(RUNS_STREAM, run_consumer(NODE))
    return bool(info.num_pending == count)


async def _have(found: dict[str, Execution], *ids: str) -> bool:
    return all(i in found for i in ids)
