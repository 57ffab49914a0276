"""What a job's process gets, what a run may set, and what output costs the server (issue 17).

One server node started with a bootstrap token, NATS credentials and two secrets in its own environment;
every request carries the token (it works with authentication on or off), every NATS client logs in.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest

from dkron_nats.names import job_key
from tests.harness import DKRON_NATS, Node, job, running, wait_for

TOKEN = "bootstrap-" + secrets.token_urlsafe(32)
AGENT_SECRET = "agent-secret-" + secrets.token_hex(8)
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NATS_LOGIN = ["--nats-user", "u", "--nats-password", "p"]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    env = {"DKRON_NATS_BOOTSTRAP_TOKEN": TOKEN, "DB_PASSWORD": AGENT_SECRET, "LANG": "C.UTF-8"}
    with running(Node(tmp_path_factory.mktemp("jobenv"), extra=NATS_LOGIN, env=env)) as started:
        yield started


def _call(node: Node, method: str, path: str, expect: int = 200, **kw: Any) -> httpx.Response:
    response = node.request(method, path, headers=AUTH, **kw)
    assert response.status_code == expect, f"{method} {path}: {response.status_code} {response.text}"
    return response


def _runs(node: Node, name: str, count: int) -> list[dict[str, Any]]:
    def done() -> list[dict[str, Any]] | None:
        found = _call(node, "GET", f"/v1/jobs/{name}/executions").json()
        ended = [e for e in found if e["finished_at"] != "0001-01-01T00:00:00Z"]
        return ended if len(ended) >= count else None

    return wait_for(done, timeout=30, what=f"{count} finished runs of {name}")


def _shell(name: str, command: str, **fields: Any) -> dict[str, Any]:
    return job(name, "@manually", command, executor_config={"command": command, "shell": "true"}, **fields)


async def _trigger(node: Node, name: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    nc = await nats.connect(f"nats://127.0.0.1:{node.nats_port}", user="u", password="p")
    try:
        data = json.dumps(payload).encode() if payload is not None else b""
        reply = await nc.request(f"dkron.trigger.{name}", data, timeout=10)
        answer: dict[str, Any] = json.loads(reply.data)
        return answer
    finally:
        await nc.close()


def trigger(node: Node, name: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    return asyncio.run(_trigger(node, name, payload))


def _environment(output: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)


# --------------------------------------------------------------------------- the job's environment


def test_a_job_gets_the_base_environment_and_none_of_the_agents_secrets(node: Node) -> None:
    _call(node, "POST", "/v1/jobs", 201, json=job("env-plain", command="env"))
    _call(node, "POST", "/v1/jobs/env-plain/run")
    output = _runs(node, "env-plain", 1)[0]["output"]
    assert TOKEN not in output, "the bootstrap token reached the job"
    assert AGENT_SECRET not in output, "a secret of the agent's environment reached the job"
    env = _environment(output)
    assert not [k for k in env if k.startswith("DKRON_NATS_")], env
    assert env.get("PATH"), "PATH is missing"
    assert env.get("LANG") == "C.UTF-8"
    assert env["DKRON_JOB_NAME"] == "env-plain"


def test_su_takes_home_user_and_shell_from_the_target_user(node: Node) -> None:
    _call(node, "POST", "/v1/jobs", 201, json=job("env-su", command="env", executor_config={
        "command": "env", "su": "nobody", "cwd": "/"}))  # fmt: skip
    _call(node, "POST", "/v1/jobs/env-su/run")
    run = _runs(node, "env-su", 1)[0]
    assert run["success"], run["output"]
    env = _environment(run["output"])
    assert env["USER"] == "nobody"
    assert env["HOME"] != "/root"
    assert AGENT_SECRET not in run["output"]


def test_passthrough_names_reach_jobs_and_dkron_nats_variables_are_refused(tmp_path: Path) -> None:
    env = {"DKRON_NATS_BOOTSTRAP_TOKEN": TOKEN, "SITE_REGION": "eu-west", "DB_PASSWORD": AGENT_SECRET}
    extra = [*NATS_LOGIN, "--job-env-passthrough", "SITE_REGION"]
    with running(Node(tmp_path / "data", extra=extra, env=env)) as passing:
        _call(passing, "POST", "/v1/jobs", 201, json=job("env-pass", command="env"))
        _call(passing, "POST", "/v1/jobs/env-pass/run")
        env_seen = _environment(_runs(passing, "env-pass", 1)[0]["output"])
    assert env_seen.get("SITE_REGION") == "eu-west"
    assert "DB_PASSWORD" not in env_seen
    refused = subprocess.run(
        [*DKRON_NATS, "agent", "--job-env-passthrough", "DKRON_NATS_BOOTSTRAP_TOKEN", "--print-config"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0
    assert "--job-env-passthrough" in refused.stderr
    assert "DKRON_NATS_BOOTSTRAP_TOKEN" in refused.stderr


# --------------------------------------------------------------------------- what a run may set


def test_a_trigger_cannot_set_bash_env(node: Node, tmp_path: Path) -> None:
    proof = tmp_path / "pwned"
    _call(node, "POST", "/v1/jobs", 201, json=job("env-bash", command="bash -c true"))
    attack = {"env": {"BASH_ENV": f"$(id > {proof})"}}
    reply = trigger(node, "env-bash", attack)
    assert "BASH_ENV is not a parameter of job env-bash" in reply.get("error", ""), reply
    # A plain trigger after it runs; once it has finished, the refused one would have too.
    assert trigger(node, "env-bash")["status"] == "accepted"
    runs = _runs(node, "env-bash", 1)
    assert len(runs) == 1
    assert not proof.exists(), "the trigger's BASH_ENV ran its code"


def test_declared_parameters_reach_the_process_from_a_trigger_and_from_run(node: Node) -> None:
    params = ["GREETING", {"name": "API_TOKEN", "secret": True}]
    command = 'echo "greeting=$GREETING token-length=${#API_TOKEN}"'  # output may mask a secret value
    created = _call(node, "POST", "/v1/jobs", 201, json=_shell("env-params", command, parameters=params))
    expected = [{"name": "GREETING", "secret": False}, {"name": "API_TOKEN", "secret": True}]
    assert created.json()["parameters"] == expected
    assert _call(node, "GET", "/v1/jobs/env-params").json()["parameters"] == expected
    reply = trigger(node, "env-params", {"env": {"GREETING": "hello", "API_TOKEN": "t0k3n-value"}})
    assert reply["status"] == "accepted", reply
    assert _runs(node, "env-params", 1)[0]["output"] == "greeting=hello token-length=11\n"
    _call(node, "POST", "/v1/jobs/env-params/run", json={"env": {"GREETING": "from-api"}})
    outputs = {r["output"] for r in _runs(node, "env-params", 2)}
    assert "greeting=from-api token-length=0\n" in outputs
    refused = _call(node, "POST", "/v1/jobs/env-params/run", 400, json={"env": {"BASH_ENV": "x"}})
    assert "BASH_ENV" in refused.text
    assert "parameters" in refused.text
    nul = _call(node, "POST", "/v1/jobs/env-params/run", 400, json={"env": {"GREETING": "a\u0000b"}})
    assert "GREETING" in nul.text
    _call(node, "POST", "/v1/jobs/env-params/run")  # no body: as before
    _call(node, "POST", "/v1/jobs/env-params/run?force=true", json={})
    _runs(node, "env-params", 4)
    audit = _call(node, "GET", "/v1/audit?_start=0&_end=100").json()
    texts = json.dumps([e for e in audit if e["target"] == "env-params"])
    assert "t0k3n-value" not in texts, "a secret parameter's value reached the audit log"
    assert "from-api" in texts


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        (["1BAD"], "parameters[0]"),
        (["OK", "WITH-DASH"], "parameters[1]"),
        ([{"name": "DKRON_NATS_BOOTSTRAP_TOKEN"}], "DKRON_NATS_"),
        (["DUP", {"name": "DUP", "secret": True}], "DUP"),
        ([{"secret": True}], "parameters"),
        ([7], "parameters"),
    ],
)
def test_bad_parameters_are_refused_naming_the_field(node: Node, parameters: Any, message: str) -> None:
    body = job("env-bad-params", parameters=parameters)
    refused = _call(node, "POST", "/v1/jobs", 400, json=body)
    assert message in refused.text
    assert "parameters" in refused.text
    _call(node, "GET", "/v1/jobs/env-bad-params", 404)


def test_a_job_stored_by_the_previous_version_reads_back_with_no_parameters(node: Node) -> None:
    stored = {
        "name": "env-old",
        "schedule": "@manually",
        "executor": "shell",
        "executor_config": {"command": "echo old"},
        "concurrency": "allow",
        "misfire_policy": "run_once",
        "misfire_max": 10,
        "notify_on": "always",
    }

    async def put() -> None:
        nc = await nats.connect(f"nats://127.0.0.1:{node.nats_port}", user="u", password="p")
        try:
            kv = await nc.jetstream().key_value("dkron-jobs")
            await kv.put(job_key("env-old"), json.dumps(stored).encode())
        finally:
            await nc.close()

    asyncio.run(put())
    found = wait_for(
        lambda: (r := node.get("/v1/jobs/env-old", headers=AUTH)).status_code == 200 and r.json(),
        what="the old job to be read",
    )
    assert found["parameters"] == []
    _call(node, "POST", "/v1/jobs/env-old/run")
    assert _runs(node, "env-old", 1)[0]["output"] == "old\n"


# --------------------------------------------------------------------------- edge validation


@pytest.mark.parametrize(
    "schedule",
    [
        "@every 100000000000h",
        "@every 99999999999999999999999999999ns",
        "@after 2024-01-01T09:00:00Z <P99999999999Y",
    ],
)
def test_an_overflowing_schedule_is_a_400(node: Node, schedule: str) -> None:
    refused = _call(node, "POST", "/v1/jobs", 400, json=job("env-overflow", schedule))
    assert "schedule" in refused.text
    assert "C int" not in refused.text


@pytest.mark.parametrize(
    "metadata", [{"a\r\nb": "x"}, {"owner": "x\r\nX-Injected: 1"}, {"k": "tab\tok", "bell": "\u0007"}]
)
def test_control_characters_in_metadata_are_a_400(node: Node, metadata: dict[str, str]) -> None:
    refused = _call(node, "POST", "/v1/jobs", 400, json=job("env-meta", metadata=metadata))
    assert "metadata" in refused.text


# --------------------------------------------------------------------------- audit


def test_nats_triggers_and_ephemeral_deletions_are_audited(node: Node) -> None:
    _call(node, "POST", "/v1/jobs", 201, json=_shell("env-audited", "true"))
    assert trigger(node, "env-audited")["status"] == "accepted"
    _runs(node, "env-audited", 1)
    _call(node, "POST", "/v1/jobs", 201, json=_shell("env-ephemeral", "true", ephemeral=True))
    _call(node, "POST", "/v1/jobs/env-ephemeral/run")
    wait_for(lambda: node.get("/v1/jobs/env-ephemeral", headers=AUTH).status_code == 404, what="deletion")

    def entries() -> list[dict[str, Any]] | None:
        found: list[dict[str, Any]] = _call(node, "GET", "/v1/audit?_start=0&_end=200").json()
        wanted = [e for e in found if e["target"] in ("env-audited", "env-ephemeral")]
        return wanted if len(wanted) >= 4 else None

    found = {(e["target"], e["action"]): e for e in wait_for(entries, what="the audit entries")}
    triggered = found[("env-audited", "job.trigger")]
    assert "dkron.trigger.env-audited" in triggered["who"]
    deleted = found[("env-ephemeral", "job.delete")]
    assert deleted["who"] != "anonymous"
    assert deleted["before"]["name"] == "env-ephemeral"


# --------------------------------------------------------------------------- bounded output


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_gigabyte_of_output_does_not_grow_the_server(node: Node) -> None:
    assert node.proc is not None
    command = "head -c 1000000000 /dev/zero | tr '\\0' a; echo; echo the-end"
    _call(node, "POST", "/v1/jobs", 201, json=_shell("env-flood", command))
    before = peak = _rss_kb(node.proc.pid)
    _call(node, "POST", "/v1/jobs/env-flood/run")
    deadline = time.monotonic() + 120
    while not (ended := _finished_runs(node, "env-flood")):
        assert time.monotonic() < deadline, "1 GB of output took over two minutes"
        peak = max(peak, _rss_kb(node.proc.pid))
        time.sleep(0.1)  # a sampling period (RSS is measured while the job prints), not a wait for it
    run = ended[0]
    assert run["success"], run["output"][-300:]
    assert run["output"].endswith("the-end\n")
    grown_mb = (peak - before) / 1024
    assert grown_mb < 100, f"the server grew by {grown_mb:.0f} MB for 1 GB of output"
    text = _call(node, "GET", f"/v1/jobs/env-flood/executions/{run['id']}/output").text
    assert "bytes of output dropped" in text.splitlines()[-1]


def _finished_runs(node: Node, name: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = _call(node, "GET", f"/v1/jobs/{name}/executions").json()
    return [e for e in found if e["finished_at"] != "0001-01-01T00:00:00Z"]
