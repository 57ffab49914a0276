"""Per-node execution slots (`--max-concurrent-executions`): runs beyond the limit wait on the node, in order,
and never fail for it; a waiting run can be cancelled, and a stopping agent ends the waiting ones at once."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from dkron_nats.agent.registry import PluginRegistry
from dkron_nats.agent.runner import Agent
from dkron_nats.agent.shell import ShellExecutor
from dkron_nats.kv.buckets import Buckets
from dkron_nats.kv.executions import ExecutionStore, execution_id
from dkron_nats.leader.lease import SIGNATURE_HEADER, Lease
from dkron_nats.models import Execution, ExecutionResult, JobSpec, RunReply, RunRequest, decode, encode
from dkron_nats.subjects import result_subject, run_subject
from dkron_nats.timefmt import ZERO_TIME, to_ns, utcnow
from tests.harness import Node, executions, finished, job, running, wait_for
from tests.natsbackend import wait_for_async
from tests.solo import solo_store


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


def test_a_node_runs_no_more_than_its_slots_and_the_others_wait_their_turn(tmp_path: Path) -> None:
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
        for _ in range(6):  # all sent at once: two run, four wait on the node
            answer = node.post("/v1/jobs/slotted/run")
            assert answer.status_code == 200, answer.text
            ids += answer.headers["X-Execution-Ids"].split(",")
        member = wait_for(lambda: _member(node, 2, 4), timeout=20, what="/v1/members: 2 running, 4 queued")
        assert member["MaxConcurrentExecutions"] == 2
        gauges = _gauges(node)
        assert gauges['dkron_execution_slots{state="limit"}'] == 2
        assert gauges['dkron_execution_slots{state="used"}'] == 2
        assert gauges["dkron_executions_queued"] == 4
        assert gauges["dkron_executions_running"] == 2
        assert len(_ledger(ledger)) == 2, "more runs started than the node has slots"
        # A queued run is a running record that has not started yet.
        records = {e["id"]: e for e in executions(node, "slotted")}
        queued = [i for i in ids if records[i]["started_at"] == ZERO_TIME]
        assert len(queued) == 4
        assert all(records[i]["status"] == "running" for i in ids)

        cancelled = queued[0]
        answer = node.post(f"/v1/jobs/slotted/executions/{cancelled}/cancel")
        assert answer.status_code == 202, answer.text
        wait_for(lambda: _member(node, 2, 3), timeout=20, what="the cancelled run to leave the queue")
        released_at = datetime.now(UTC)
        release.touch()
        history = {e["id"]: e for e in wait_for(lambda: finished(node, "slotted", 6), timeout=30)}

    ended = history.pop(cancelled)
    assert ended["success"] is False
    assert "cancelled" in ended["output"]
    assert ended["started_at"] == ZERO_TIME, "a run cancelled in the queue never started"
    assert all(e["success"] and e["status"] == "success" for e in history.values()), history
    events = _ledger(ledger)
    assert {ex_id for _, _, ex_id in events} == set(history), "the cancelled run must not have run"
    assert len(events) == 10
    assert _most_at_once(events) == 2
    # The runs that waited started when a slot came free, and their record says so.
    waited = [history[i] for i in queued[1:]]
    assert all(_at(e["started_at"]) >= released_at for e in waited), waited


# ---------------------------------------------------------------------------------------------------------
# The agent alone, on a real nats-server: what a stop does to the runs waiting for a slot.

NODE = "agent-1"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def nats_store(tmp_path: Path) -> AsyncIterator[tuple[Client, Buckets, Lease]]:
    async with solo_store(tmp_path) as solo:
        yield solo.nc, solo.buckets, solo.lease


def _request(lease: Lease, command: str) -> tuple[bytes, dict[str, str], str]:
    group = to_ns(utcnow())
    ex = Execution(
        id=execution_id(group, NODE), job_name="slow", group=group, node_name=NODE, fence=lease.fence
    )
    body = encode(
        RunRequest(
            execution=ex,
            job=JobSpec(name="slow", executor="shell", executor_config={"command": command, "shell": "true"}),
        )
    )
    return body, {SIGNATURE_HEADER: lease.sign(body)}, ex.id


@pytest.mark.anyio
async def test_a_stopping_agent_ends_queued_runs_at_once_and_keeps_them_listed_until_then(
    nats_store: tuple[Client, Buckets, Lease], tmp_path: Path
) -> None:
    nc, buckets, lease = nats_store
    js = nc.jetstream()
    store = ExecutionStore(buckets.executions, js)
    agent = Agent(
        nc,
        js,
        NODE,
        store,
        PluginRegistry({"shell": ShellExecutor()}),
        shutdown_grace=30,
        lease_kv=buckets.leader,
        max_concurrent_executions=1,
    )
    finished_runs: dict[str, Execution] = {}

    async def on_result(msg: Msg) -> None:
        ex = decode(msg.data, ExecutionResult).execution
        finished_runs[ex.id] = ex

    marker, go = tmp_path / "ran", tmp_path / "go"
    results = await nc.subscribe(result_subject(NODE), cb=on_result)
    with _touched_at_the_end(go):  # the running job ends even if the test fails
        async with anyio.create_task_group() as tg:
            await tg.start(agent.run)
            ids = []
            for command in (f"while [ ! -f {go} ]; do sleep 0.05; done; echo first", f"touch {marker}"):
                body, headers, ex_id = _request(lease, command)
                reply = await nc.request(run_subject(NODE), body, timeout=10, headers=headers)
                assert decode(reply.data, RunReply) == RunReply(ok=True)  # queued, yet accepted
                ids.append(ex_id)
            first, waiting = ids
            # The waiting run is in the list the heartbeat carries, so the leader never rules it lost.
            assert sorted(agent.running_keys()) == sorted(ExecutionStore.key("slow", i) for i in ids)
            claimed = await store.get("slow", waiting)
            assert claimed is not None
            assert (claimed.status, claimed.started_at) == ("running", None)
            agent.stop()
            await wait_for_async(lambda: _have(finished_runs, waiting), what="the queued run's result")
            assert first not in finished_runs, "the running one has its shutdown grace"
            go.touch()
            await wait_for_async(lambda: _have(finished_runs, first), what="the running one's result")
    await results.unsubscribe()
    queued = finished_runs[waiting]
    assert not queued.success
    assert "shutting down" in queued.output
    assert queued.started_at is None
    assert not marker.exists(), "a run still waiting for a slot at the stop must not start"
    # The running one had its grace and finished on its own.
    assert finished_runs[first].success, finished_runs[first].output


async def _have(found: dict[str, Execution], *ids: str) -> bool:
    return all(i in found for i in ids)
