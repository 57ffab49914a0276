"""Direct NATS triggering with a plain nats-py client: publish, request, payload, errors, de-duplication."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import nats

from tests.harness import Node, executions, finished, job, wait_for


def _shell(name: str, command: str, **fields: Any) -> dict[str, Any]:
    return job(name, "@manually", command, executor_config={"command": command, "shell": "true"}, **fields)


async def _request(server: Node, subject: str, payload: bytes = b"", msg_id: str = "") -> dict[str, Any]:
    nc = await nats.connect(**server.nats_options())
    try:
        headers = {"Nats-Msg-Id": msg_id} if msg_id else None
        reply = await nc.request(subject, payload, timeout=10, headers=headers)
        answer: dict[str, Any] = json.loads(reply.data)
        return answer
    finally:
        await nc.close()


async def _publish(server: Node, subject: str, payload: bytes = b"") -> None:
    nc = await nats.connect(**server.nats_options())
    try:
        await nc.publish(subject, payload)
        await nc.flush()
    finally:
        await nc.close()


def test_a_plain_publish_and_a_request_each_launch_the_job_once(server: Node) -> None:
    server.post("/v1/jobs", json=_shell("nats-triggered", "echo ran"))
    asyncio.run(_publish(server, "dkron.trigger.nats-triggered"))
    wait_for(lambda: finished(server, "nats-triggered", 1), timeout=20, what="the published trigger's run")
    reply = asyncio.run(_request(server, "dkron.trigger.nats-triggered"))
    assert reply["status"] == "accepted"
    assert reply["job"] == "nats-triggered"
    runs = wait_for(lambda: finished(server, "nats-triggered", 2), timeout=20, what="the requested run")
    assert len(runs) == 2
    assert f"{reply['launch']}-{server.name}" in {r["id"] for r in runs}, (
        "the reply's launch id is not the run's"
    )
    assert all(r["success"] and r["output"] == "ran\n" for r in runs)
    server.request("DELETE", "/v1/jobs/nats-triggered")


def test_a_payload_adds_environment_and_can_force_a_busy_job(server: Node) -> None:
    server.post("/v1/jobs", json=_shell("nats-env", 'echo "greeting=$GREETING"', parameters=["GREETING"]))
    payload = json.dumps({"env": {"GREETING": "hello"}}).encode()
    assert asyncio.run(_request(server, "dkron.trigger.nats-env", payload))["status"] == "accepted"
    run = wait_for(lambda: finished(server, "nats-env", 1), timeout=20, what="the run")[0]
    assert run["output"] == "greeting=hello\n"
    server.post("/v1/jobs", json=_shell("nats-busy", "sleep 30", concurrency="forbid"))
    asyncio.run(_request(server, "dkron.trigger.nats-busy"))
    wait_for(
        lambda: [e for e in executions(server, "nats-busy") if e["status"] == "running"] or None,
        timeout=20,
        what="the first run",
    )
    second = asyncio.run(_request(server, "dkron.trigger.nats-busy"))
    skipped = wait_for(
        lambda: [e for e in executions(server, "nats-busy") if e["status"] == "skipped"] or None,
        timeout=20,
        what="the busy trigger recorded as skipped",
    )
    assert skipped[0]["group"] == second["launch"]
    assert "concurrency is forbid" in skipped[0]["output"]
    asyncio.run(_request(server, "dkron.trigger.nats-busy", b'{"force": true}'))
    wait_for(
        lambda: len([e for e in executions(server, "nats-busy") if e["status"] == "running"]) == 2 or None,
        timeout=20,
        what="the forced run beside the first",
    )
    for name in ("nats-env", "nats-busy"):
        server.request("DELETE", f"/v1/jobs/{name}")


def test_bad_triggers_get_an_error_and_change_nothing(server: Node) -> None:
    server.post("/v1/jobs", json=_shell("nats-strict", "true"))
    server.post("/v1/jobs", json={**_shell("nats-off", "true"), "disabled": True})
    cases = [
        ("dkron.trigger.no-such-job", b"", "job no-such-job not found"),
        ("dkron.trigger.nats-off", b"", "job nats-off is disabled"),
        ("dkron.trigger.nats-strict", b"not json", "bad trigger payload"),
        ("dkron.trigger.nats-strict", b'{"force": "yes"}', "bad trigger payload"),
        ("dkron.trigger.nats-strict", b'{"env": {"1BAD": "x"}}', "not a valid variable name"),
        ("dkron.trigger.nats-strict", b'{"surprise": 1}', "bad trigger payload"),
        ("dkron.trigger.Upper", b"", "invalid job name"),
    ]
    for subject, payload, message in cases:
        reply = asyncio.run(_request(server, subject, payload))
        assert message in reply.get("error", ""), (subject, payload, reply)
    assert executions(server, "nats-strict") == []
    assert executions(server, "nats-off") == []
    for name in ("nats-strict", "nats-off"):
        server.request("DELETE", f"/v1/jobs/{name}")


def test_a_retried_request_with_the_same_message_id_runs_once(server: Node) -> None:
    server.post("/v1/jobs", json=_shell("nats-dedup", "true"))
    first = asyncio.run(_request(server, "dkron.trigger.nats-dedup", msg_id="payroll-2026-11-23"))
    again = asyncio.run(_request(server, "dkron.trigger.nats-dedup", msg_id="payroll-2026-11-23"))
    assert first["status"] == "accepted"
    assert again["status"] == "duplicate"
    wait_for(lambda: finished(server, "nats-dedup", 1), timeout=20, what="the run")
    other = asyncio.run(_request(server, "dkron.trigger.nats-dedup", msg_id="payroll-2026-11-24"))
    assert other["status"] == "accepted"
    runs = wait_for(lambda: finished(server, "nats-dedup", 2), timeout=20, what="the second run")
    assert {r["group"] for r in runs} == {first["launch"], other["launch"]}
    server.request("DELETE", "/v1/jobs/nats-dedup")
