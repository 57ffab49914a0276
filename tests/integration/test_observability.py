"""Traces (a real OTLP receiver), Prometheus metrics and NATS events, seen from outside a real server."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nats

from tests.harness import Node, finished, job, running, wait_for
from tests.harness import metric as _metric
from tests.otlp import Span, otlp_receiver


def _shell(name: str, schedule: str, command: str, **fields: Any) -> dict[str, Any]:
    return job(name, schedule, command, executor_config={"command": command, "shell": "true"}, **fields)


def _trace_of(spans: list[Span], trace_id: str, names: set[str]) -> list[Span] | None:
    mine = [s for s in spans if s.trace_id == trace_id]
    return mine if names <= {s.name for s in mine} else None


def test_one_connected_trace_per_launch_down_to_the_shell_job(tmp_path: Path) -> None:
    """A server and a separate agent process, both exporting to one OTLP receiver."""
    with otlp_receiver() as receiver:
        traced = ["--otel-endpoint", receiver.url]
        server = Node(tmp_path / "server", extra=traced)
        agent = Node(tmp_path / "agent", name="a1", server=False, nats_creds_from=server)
        agent.extra = [*traced, "--nats-url", f"nats://127.0.0.1:{server.nats_port}", "--tag", "role=worker"]
        with running(server), running(agent, leader=False):
            wait_for(lambda: len(server.get("/v1/members").json()) == 2, timeout=20, what="the agent")
            body = _shell("traced", "@every 1s", 'echo "tp=$TRACEPARENT"', tags={"role": "worker"})
            server.post("/v1/jobs", json=body)
            record = wait_for(lambda: finished(server, "traced", 1), timeout=20, what="a traced run")[0]
            server.request("PUT", "/v1/jobs/traced", json={**body, "disabled": True})
            output = server.get(f"/v1/jobs/traced/executions/{record['id']}").json()["output"]
            found = re.search(r"tp=00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}", output)
            assert found, f"the job got no TRACEPARENT: {output!r}"
            trace_id, job_parent = found.groups()
            names = {"schedule", "launch record", "dispatch", "execute", "record result"}
            spans = wait_for(
                lambda: _trace_of(receiver.snapshot(), trace_id, names), timeout=20, what="the launch's spans"
            )
    assert record["node_name"] == "a1"
    by_name = {s.name: s for s in spans}
    by_id = {s.span_id: s for s in spans}
    assert by_name["schedule"].parent_id == "", "the tick is not the root of the launch's trace"
    assert by_id[by_name["launch record"].parent_id].name == "schedule"
    assert by_id[by_name["dispatch"].parent_id].name == "schedule"
    assert by_name["dispatch"].kind == 4  # PRODUCER
    assert by_name["execute"].parent_id == by_name["dispatch"].span_id, "the agent did not continue the trace"
    assert by_name["execute"].kind == 5  # CONSUMER
    assert job_parent == by_name["execute"].span_id, "TRACEPARENT is not the execution's span"
    assert by_id[by_name["record result"].parent_id].name == "execute"
    assert by_name["execute"].attributes["dkron.job"] == "traced"
    assert {s.name: s.service for s in spans if s.name in names} == {
        "schedule": "n1",
        "launch record": "n1",
        "dispatch": "n1",
        "execute": "a1",
        "record result": "n1",
    }, "the spans did not come from the leader and the agent processes"


def _finished_once(server: Node, name: str) -> Callable[[], list[dict[str, Any]] | None]:
    return lambda: finished(server, name, 1)


def _metrics_when(read: Callable[[], str], ok: Callable[[str], bool]) -> Callable[[], str | None]:
    def check() -> str | None:
        text = read()
        return text if ok(text) else None

    return check


def test_metrics_move_as_jobs_run_miss_and_fail(server: Node) -> None:
    def metrics() -> str:
        response = server.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        return response.text

    before = metrics()
    assert _metric(before, "dkron_leader") == 1
    server.post("/v1/jobs", json=_shell("m-ok", "@manually", "true"))
    server.post("/v1/jobs", json=_shell("m-bad", "@manually", "exit 3"))
    server.post("/v1/jobs", json=_shell("m-long", "@manually", "sleep 3"))
    for name in ("m-ok", "m-bad"):
        server.post(f"/v1/jobs/{name}/run")
        wait_for(_finished_once(server, name), timeout=20, what=name)
    server.post("/v1/jobs/m-long/run")
    wait_for(lambda: _metric(metrics(), "dkron_executions_running") >= 1, timeout=10, what="a running gauge")
    text = wait_for(
        _metrics_when(
            metrics, lambda t: _metric(t, "dkron_job_executions_failed_total", job_name="m-bad") > 0
        ),
        timeout=10,
        what="the failure counted",
    )
    assert _metric(text, "dkron_job_executions_succeeded_total", job_name="m-ok") == 1
    assert _metric(text, "dkron_job_executions_failed_total", job_name="m-bad") == 1
    assert _metric(text, "dkron_dispatch_seconds_count") >= 3
    assert _metric(text, "dkron_lease_renewals_total") >= 0
    # Missed slots: scheduling paused across several slots of a 1 s job (run_once keeps only the latest).
    server.post("/v1/jobs", json=_shell("m-tick", "@every 1s", "true"))
    wait_for(lambda: finished(server, "m-tick", 1), timeout=20, what="a tick")
    server.post("/v1/pause", params={"scheduling": "true"})
    try:
        time.sleep(3.5)  # the scenario: slots fall due while scheduling is paused
    finally:
        server.post("/v1/unpause", params={"scheduling": "true"})
    text = wait_for(
        _metrics_when(metrics, lambda t: _metric(t, "dkron_slots_missed_total", job_name="m-tick") >= 2),
        timeout=15,
        what="missed slots counted",
    )
    assert _metric(text, "dkron_schedule_lag_seconds_count") >= 1
    # Every scheduled decision went into the decision log; each append carried at least one, apart from
    # each partition's takeover marker.
    assert _metric(text, "dkron_decisions_total") >= 2
    takeovers = _metric(text, "dkron_partitions_owned")
    assert takeovers >= 1
    assert (
        1
        <= _metric(text, "dkron_decision_appends_total")
        <= _metric(text, "dkron_decisions_total") + takeovers
    )
    for name in ("m-ok", "m-bad", "m-long", "m-tick"):
        server.request("DELETE", f"/v1/jobs/{name}")


def test_events_for_jobs_and_executions(server: Node) -> None:
    async def scenario() -> list[dict[str, Any]]:
        nc = await nats.connect(**server.nats_options())
        got: list[dict[str, Any]] = []
        try:
            sub = await nc.subscribe("dkron.events.>")
            await nc.flush()
            await asyncio.to_thread(server.post, "/v1/jobs", json=_shell("evented", "@manually", "echo hi"))
            await asyncio.to_thread(server.post, "/v1/jobs/evented/run")
            await asyncio.to_thread(wait_for, lambda: finished(server, "evented", 1), 20, "the run")
            await asyncio.to_thread(server.request, "DELETE", "/v1/jobs/evented")
            async with asyncio.timeout(10):
                while [e["type"] for e in got if e["job"] == "evented"][-1:] != ["job.deleted"]:
                    msg = await sub.next_msg(timeout=10)
                    event = json.loads(msg.data)
                    assert msg.subject == f"dkron.events.{event['type']}"
                    got.append(event)
        finally:
            await nc.close()
        return [e for e in got if e["job"] == "evented"]

    mine = asyncio.run(scenario())
    kinds = [e["type"] for e in mine]
    assert kinds == ["job.created", "execution.started", "execution.finished", "job.deleted"], kinds
    assert mine[0]["data"]["name"] == "evented"
    assert mine[2]["data"]["output"] == "hi\n"
    assert mine[2]["data"]["status"] == "success"
    assert mine[3]["data"] is None
