"""Secrets are masked wherever a reader or an operator could see them: outputs, job views, the node's log.

A job's secrets are the values of its secret-named config keys (see secrets.py); what the job prints of them
is cut out on the agent, before the output is stored or streamed, even when a secret arrives in two writes.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import Node, finished, job, running, wait_for
from tests.httpserver import serving

BOOTSTRAP = "bootstrap-" + uuid.uuid4().hex
SECRET = "s3cr3t-value-123"
MASK = "***"


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Secured:
    """A server with `--auth`, called as the admin (the bootstrap token) or as a `read` token."""

    def __init__(self, node: Node) -> None:
        self.node = node
        created = node.post("/v1/tokens", json={"name": "reader", "role": "read"}, headers=_bearer(BOOTSTRAP))
        assert created.status_code == 201, created.text
        self.reader = _bearer(created.json()["token"])

    def admin(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return self.node.request(method, path, headers=_bearer(BOOTSTRAP), **kw)

    def read(self, path: str) -> httpx.Response:
        response = self.node.get(path, headers=self.reader)
        assert response.status_code == 200, response.text
        return response


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    node = Node(
        tmp_path_factory.mktemp("masking"), extra=["--auth"], env={"DKRON_NATS_BOOTSTRAP_TOKEN": BOOTSTRAP}
    )
    with running(node):
        yield Secured(node)


def _shell_job(name: str, command: str, **config: str) -> dict[str, Any]:
    return job(name, "@manually", command, executor_config={"command": command, "shell": "true", **config})


def _live_output(secured: Secured, url: str, into: list[str]) -> threading.Thread:
    """Follows the SSE output as the reader, collecting the `output` events' text until the stream ends."""

    def follow() -> None:
        headers = {**secured.reader, "Accept": "text/event-stream"}
        with httpx.stream("GET", url, headers=headers, timeout=30) as response:
            lines = (line.partition(":")[2] for line in response.iter_lines() if line.startswith("data:"))
            into.extend(json.loads(data).get("output", "") for data in lines)

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    return thread


def test_a_secret_the_job_prints_is_masked_in_every_output_a_reader_sees(
    secured: Secured, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    command = (
        'echo "db=$DB_PASSWORD"; printf "s3cr3t-val"; sleep 0.2; printf "ue-123\\n"; echo printed; '
        f"while [ ! -e {gate} ]; do sleep 0.05; done"
    )
    created = secured.admin(
        "POST", "/v1/jobs", json=_shell_job("printer", command, env=f"DB_PASSWORD={SECRET}")
    )
    assert created.status_code == 201, created.text
    assert secured.admin("POST", "/v1/jobs/printer/run").status_code == 200

    def busy_output() -> str | None:
        outputs = [e.get("output", "") for e in secured.read("/v1/busy").json() if e["job_name"] == "printer"]
        return outputs[0] if outputs and "printed" in outputs[0] else None

    busy = wait_for(busy_output, timeout=20, what="the running execution in the busy view")
    running_id = next(e["id"] for e in secured.read("/v1/jobs/printer/executions").json())
    live: list[str] = []
    reader = _live_output(secured, f"{secured.node.url}/v1/jobs/printer/executions/{running_id}/output", live)
    gate.touch()
    reader.join(timeout=30)
    assert not reader.is_alive(), "the live output did not end with the execution"
    wait_for(lambda: _finished(secured, "printer"), timeout=20, what="the run to finish")

    stored = secured.read("/v1/jobs/printer/executions").json()[0]["output"]
    text = secured.read(f"/v1/jobs/printer/executions/{running_id}/output").text
    for where, shown in {"busy": busy, "live": "".join(live), "stored": stored, "text": text}.items():
        assert SECRET not in shown, f"the {where} output shows the secret: {shown!r}"
        assert "s3cr3t-val" not in shown, f"the {where} output shows the first half of the split secret"
        assert f"db={MASK}\n{MASK}\nprinted" in shown, f"the {where} output: {shown!r}"


def test_the_nodes_own_credentials_are_masked_in_what_a_job_prints(secured: Secured) -> None:
    # The agent's environment, as a job can read it even when it is not handed down.
    command = (
        "echo \"env:$DKRON_NATS_BOOTSTRAP_TOKEN\"; tr '\\0' '\\n' < /proc/$PPID/environ | grep BOOTSTRAP"
    )
    assert secured.admin("POST", "/v1/jobs", json=_shell_job("snoop", command)).status_code == 201
    assert secured.admin("POST", "/v1/jobs/snoop/run").status_code == 200
    wait_for(lambda: _finished(secured, "snoop"), timeout=20, what="the run to finish")
    output = secured.read("/v1/jobs/snoop/executions").json()[0]["output"]
    assert BOOTSTRAP not in output
    assert f"DKRON_NATS_BOOTSTRAP_TOKEN={MASK}" in output, output


def _finished(secured: Secured, name: str) -> bool:
    found = secured.read(f"/v1/jobs/{name}/executions").json()
    return bool(found) and found[0]["status"] in ("success", "failed")


def test_a_reader_sees_tokens_inside_commands_and_bodies_masked(secured: Secured) -> None:
    command = "curl -H 'Authorization: Bearer tok-abcdef123456' 'https://ops:opspass1@example.com/?q=1'"
    body = json.dumps({"user": "svc", "password": "body-pass-77", "nested": {"apiKey": "key-9876"}})
    shell = _shell_job("curler", command)
    http = job("poster", "@manually", executor="http")
    http["executor_config"] = {"method": "POST", "url": "https://example.com/login", "body": body}
    for spec in (shell, http):
        assert secured.admin("POST", "/v1/jobs", json=spec).status_code == 201
    shown = json.dumps([secured.read("/v1/jobs/curler").json(), secured.read("/v1/jobs/poster").json()])
    for secret in ("tok-abcdef123456", "opspass1", "body-pass-77", "key-9876"):
        assert secret not in shown, f"{secret} is shown to a reader"
    assert "Bearer ***" in shown
    assert "svc" in shown, "what is not secret stays readable"
    admin_view = secured.admin("GET", "/v1/jobs/poster").json()
    assert json.loads(admin_view["executor_config"]["body"])["password"] == "body-pass-77"


def test_the_value_of_a_secret_parameter_is_masked_in_the_runs_output(server: Node) -> None:
    spec = _shell_job("with-otp", 'echo "otp=$OTP region=$REGION"')
    spec["parameters"] = [{"name": "OTP", "secret": True}, {"name": "REGION"}]
    assert server.post("/v1/jobs", json=spec).status_code == 201
    env = {"OTP": "otp-value-9876", "REGION": "eu-west-1"}
    assert server.post("/v1/jobs/with-otp/run", json={"env": env}).status_code == 200
    [execution] = wait_for(lambda: finished(server, "with-otp", 1), timeout=20, what="the run")
    assert execution["output"] == f"otp={MASK} region=eu-west-1\n"


def test_the_log_processor_logs_the_output_masked(server: Node) -> None:
    spec = _shell_job("log-masked", 'echo "connecting with $DB_PASSWORD"', env=f"DB_PASSWORD={SECRET}")
    spec["processors"] = {"log": {}}
    assert server.post("/v1/jobs", json=spec).status_code == 201
    assert server.post("/v1/jobs/log-masked/run").status_code == 200
    [execution] = wait_for(lambda: finished(server, "log-masked", 1), timeout=20, what="the run")
    block = f"execution={execution['id']} -----\nconnecting with {MASK}\n----- END OUTPUT -----"
    wait_for(lambda: block in server.logs(), timeout=10, what="the masked output block in the server log")
    assert SECRET not in server.logs()


def test_url_credentials_never_reach_the_node_log(server: Node) -> None:
    with serving() as target:
        url = f"http://user:hunter2pass@127.0.0.1:{target.server_port}/ok?api_key=abcd1234&page=2"
        spec = job("http-creds", "@manually", executor="http")
        spec["executor_config"] = {"method": "GET", "url": url, "expectCode": "200"}
        assert server.post("/v1/jobs", json=spec).status_code == 201, "saved"
        assert server.post("/v1/jobs/http-creds/run").status_code == 200
        [execution] = wait_for(lambda: finished(server, "http-creds", 1), timeout=20, what="the http run")
        assert execution["status"] == "success", execution["output"]
        assert target.requests, "the request reached the server"
    logs = server.logs()
    assert "HTTP Request: GET http://user:***@127.0.0.1" in logs, "the client's request line is still logged"
    assert "hunter2pass" not in logs
    assert "abcd1234" not in logs
