"""Forged run requests and results from a client that holds NATS credentials (a compromised agent).

A real server runs with an embedded nats-server that requires a user and password; the attacker connects
with the same credentials, publishes the forged message for real, and the test checks that nothing
happened: no process ran, no record changed, no child was launched, no job was deleted, and genuine runs
still work afterwards (audit findings C2 and H2 of issue 17).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import msgspec
import nats
import pytest
from nats.aio.client import Client
from nats.js.errors import KeyNotFoundError

from dkron_nats.agent.runner import Agent
from dkron_nats.kv.buckets import (
    EXECUTIONS,
    LEADER,
    RESULTS_CONSUMER,
    RESULTS_STREAM,
    RUNS_STREAM,
    cluster_partitions,
)
from dkron_nats.kv.executions import ExecutionStore
from dkron_nats.leader.lease import LeaseRecord, term_of
from dkron_nats.models import Execution, ExecutionResult, JobSpec, RunRequest, decode, encode
from dkron_nats.names import job_key
from dkron_nats.subjects import ONLY_PARTITION, Partition, partition_for, run_consumer, run_subject
from dkron_nats.timefmt import utcnow
from tests.cluster import wait_for_async
from tests.harness import Node, executions, finished, job, running, wait_for

USER = "dkron"
PASSWORD = secrets.token_urlsafe(16)
LOGIN = ["--nats-user", USER, "--nats-password", PASSWORD, "--shutdown-grace", "1s"]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    with running(Node(tmp_path / "n1", extra=LOGIN)) as n1:
        yield n1


async def _connect(node: Node) -> Client:
    return await nats.connect(f"nats://127.0.0.1:{node.nats_port}", user=USER, password=PASSWORD)


async def _partition(nc: Client, job_name: str) -> Partition:
    """The partition of a job, which names the lease and the results consumer (one: the leader's)."""
    return partition_for(job_key(job_name), await cluster_partitions(nc.jetstream()))


async def _term(nc: Client, job_name: str) -> int:
    """The current term of the leader (the owner of the job's partition), read from its lease as any client
    holding credentials can."""
    part = await _partition(nc, job_name)
    entry = await (await nc.jetstream().key_value(LEADER)).get(part.lease_key)
    assert entry.value is not None
    return term_of(decode(entry.value, LeaseRecord), int(entry.revision or 0))


async def _forge_run(node: Node, request: RunRequest) -> None:
    """Publish a run request for node n1 into DKRON_RUNS, and wait until n1's agent has taken it off its
    consumer (refused or not)."""
    nc = await _connect(node)
    try:
        await _publish_and_wait_until_taken(nc, request)
    finally:
        await nc.close()


async def _publish_and_wait_until_taken(nc: Client, request: RunRequest) -> None:
    js = nc.jetstream()
    first = await wait_for_async(
        lambda: js.consumer_info(RUNS_STREAM, run_consumer("n1")), what="n1's consumer of run requests"
    )
    await js.publish(run_subject("n1"), encode(request))

    async def taken() -> bool:
        info = await js.consumer_info(RUNS_STREAM, run_consumer("n1"))
        assert info.delivered is not None
        assert first.delivered is not None
        delivered = info.delivered.stream_seq > first.delivered.stream_seq
        return delivered and info.num_pending == 0 and not info.num_ack_pending

    await wait_for_async(taken, what="the agent to take the forged request off its queue")


def _forged_request(
    name: str,
    command: str,
    fence: int,
    group: int = 1,
    job_spec: JobSpec | None = None,
    partition: Partition = ONLY_PARTITION,
) -> RunRequest:
    spec = job_spec or JobSpec(name=name, executor="shell", executor_config={"command": command})
    ex = Execution(
        id=f"{group}-n1",
        job_name=spec.name,
        group=group,
        node_name="n1",
        fence=fence,
        partition=partition.tag,
    )
    return RunRequest(execution=ex, job=spec)


async def _record(nc: Client, job_name: str, exec_id: str) -> Execution | None:
    kv = await nc.jetstream().key_value(EXECUTIONS)
    try:
        entry = await kv.get(ExecutionStore.key(job_name, exec_id))
    except KeyNotFoundError:
        return None
    return decode(entry.value, Execution) if entry.value else None


def test_a_forged_high_fence_is_refused_and_genuine_runs_still_work(node: Node, tmp_path: Path) -> None:
    marker = tmp_path / "forged-fence-ran"
    request = _forged_request("no-such-job", f"touch {marker}", fence=9 * 10**18)
    asyncio.run(_forge_run(node, request))
    node.post("/v1/jobs", json=job("genuine", command="echo genuine")).raise_for_status()
    assert node.post("/v1/jobs/genuine/run").is_success
    run = wait_for(lambda: finished(node, "genuine", 1), timeout=20, what="the genuine run")[0]
    assert run["success"], f"a forged fence broke genuine runs: {run['output']}"
    assert run["output"] == "genuine\n"
    assert "refused a run request for no-such-job" in node.logs(), "a fence from no leader was accepted"
    assert not marker.exists()


def test_a_forged_inline_job_with_the_current_term_does_not_run(node: Node, tmp_path: Path) -> None:
    marker = tmp_path / "forged-inline-ran"

    async def attack() -> Execution | None:
        nc = await _connect(node)
        try:
            fence, part = await _term(nc, "forged-inline"), await _partition(nc, "forged-inline")
            request = _forged_request("forged-inline", f"touch {marker}", fence=fence, partition=part)
            await _publish_and_wait_until_taken(nc, request)
            return await _record(nc, "forged-inline", request.execution.id)
        finally:
            await nc.close()

    record = asyncio.run(attack())
    assert record is None, f"the forged execution was claimed: {record}"
    assert not marker.exists()
    # The refusal is logged, with why: no signature of the leader's launch.
    refusals = [
        line for line in node.logs().splitlines() if "refused a run request for forged-inline" in line
    ]
    assert refusals, "the agent ran a job the leader never launched"
    assert "launch" in refusals[0]


def test_a_forged_run_of_an_existing_job_is_refused(node: Node, tmp_path: Path) -> None:
    """The job exists and the term is current, but the leader launched no such execution (and the
    attacker changed the command)."""
    marker = tmp_path / "forged-existing-ran"
    node.post("/v1/jobs", json=job("existing", command="echo hi")).raise_for_status()

    async def attack() -> None:
        nc = await _connect(node)
        try:
            spec = JobSpec(name="existing", executor="shell", executor_config={"command": f"touch {marker}"})
            fence, part = await _term(nc, "existing"), await _partition(nc, "existing")
            request = _forged_request("existing", "", fence=fence, group=7, job_spec=spec, partition=part)
            await _publish_and_wait_until_taken(nc, request)
        finally:
            await nc.close()

    asyncio.run(attack())
    assert "refused a run request for existing" in node.logs()
    assert executions(node, "existing") == []
    assert not marker.exists()


async def _forge_result(nc: Client, subject_node: str, execution: Execution) -> None:
    """Publish a success result and wait until the leader has taken it off the work queue."""
    js = nc.jetstream()
    now = utcnow()
    done = msgspec.structs.replace(
        execution, started_at=now, finished_at=now, success=True, status="success", output="forged\n"
    )
    part = await _partition(nc, execution.job_name)  # the owner of the job's partition takes its results
    done = msgspec.structs.replace(done, partition=part.tag)
    ack = await js.publish(part.result_subject(subject_node), encode(ExecutionResult(execution=done)))

    async def taken() -> bool:
        info = await js.consumer_info(RESULTS_STREAM, part.durable(RESULTS_CONSUMER))
        return info.ack_floor is not None and (info.ack_floor.stream_seq or 0) >= ack.seq

    await wait_for_async(taken, 20, "the leader to take the forged result")


def _running_record(node: Node, name: str) -> dict[str, Any]:
    assert node.post(f"/v1/jobs/{name}/run").is_success
    return wait_for(lambda: executions(node, name), timeout=20, what=f"{name} to start")[0]


def _forged_success_jobs(node: Node, suffix: str, command: str) -> None:
    """A parent with a dependent child, and an ephemeral job: what a success result sets off."""
    parent, child, eph = (f"{name}{suffix}" for name in ("parent", "child", "eph"))
    node.post("/v1/jobs", json=job(parent, command=command)).raise_for_status()
    node.post("/v1/jobs", json=job(child, parent_job=parent, command="echo child")).raise_for_status()
    node.post("/v1/jobs", json=job(eph, command=command, ephemeral=True)).raise_for_status()


def _nothing_followed(node: Node, suffix: str) -> None:
    assert executions(node, f"child{suffix}") == [], "a forged result launched the child job"
    assert node.get(f"/v1/jobs/eph{suffix}").status_code == 200, "a forged result deleted the ephemeral job"
    for name in (f"parent{suffix}", f"eph{suffix}"):
        state = node.get(f"/v1/jobs/{name}").json()
        assert (state["success_count"], state["error_count"]) == (0, 0), f"a forged result counted for {name}"
    assert "refused result" in node.logs()


@pytest.mark.parametrize(
    ("subject_node", "named_node"),
    [("agentX", "n1"), ("agentX", "agentX")],
    ids=["subject-is-not-the-execution-node", "node-holds-no-claim"],
)
def test_forged_results_for_running_executions_change_nothing(
    node: Node, subject_node: str, named_node: str
) -> None:
    """n1 runs both executions; the result comes from agentX (naming n1, or itself)."""
    _forged_success_jobs(node, "", "sleep 60")
    running = {name: _running_record(node, name)["id"] for name in ("parent", "eph")}

    async def attack() -> tuple[list[Execution | None], list[Execution | None]]:
        nc = await _connect(node)
        try:
            before = [await _record(nc, name, exec_id) for name, exec_id in running.items()]
            for claim in before:
                assert claim is not None
                assert claim.status == "running"
                forged = msgspec.structs.replace(claim, node_name=named_node)
                await _forge_result(nc, subject_node, forged)
            return before, [await _record(nc, name, exec_id) for name, exec_id in running.items()]
        finally:
            await nc.close()

    before, after = asyncio.run(attack())
    _nothing_followed(node, "")
    assert after == before, "a forged result changed the execution records"
    assert subject_node in node.logs()


def test_a_forged_result_for_an_execution_never_claimed_changes_nothing(node: Node) -> None:
    """Sent in the name of the very node it names, but that node never ran (or claimed) it."""
    _forged_success_jobs(node, "2", "true")

    async def attack() -> list[Execution | None]:
        nc = await _connect(node)
        try:
            forged = [
                Execution(id="5-n1", job_name=name, group=5, node_name="n1") for name in ("parent2", "eph2")
            ]
            for execution in forged:
                await _forge_result(nc, "n1", execution)
            return [await _record(nc, ex.job_name, ex.id) for ex in forged]
        finally:
            await nc.close()

    records = asyncio.run(attack())
    _nothing_followed(node, "2")
    assert records == [None, None], "a result for an unclaimed execution was recorded"


def test_an_agent_that_has_not_seen_the_new_lease_reads_it_before_refusing(node: Node) -> None:
    """A new leader's request can outrun the agent's lease watch: the agent reads the lease once and accepts
    it; a fence above the lease's term is still refused, and refusing it changes nothing."""

    async def judge() -> list[str]:
        nc = await _connect(node)
        try:
            kv = await nc.jetstream().key_value(LEADER)
            unused = cast(Any, None)
            agent = Agent(nc, nc.jetstream(), "probe", unused, unused, lease_kv=kv)  # its watch never runs
            term = await _term(nc, "job")

            async def verdict(fence: int) -> str:
                part = await _partition(nc, "job")
                request = Execution(id="1-probe", job_name="job", group=1, fence=fence, partition=part.tag)
                return (await agent._term_refusal(request))[0]

            return [
                await verdict(term),
                await verdict(term + 10**6),
                await verdict(term),
                await verdict(term - 1),
            ]
        finally:
            await nc.close()

    current, forged, again, older = asyncio.run(judge())
    assert current == "", "a request of the current leader was refused before the watch caught up"
    assert "not the current leader's term" in forged
    assert again == "", "a refused forged fence changed the term the agent follows"
    assert "stale leader" in older
