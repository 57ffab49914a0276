"""The audit log: every change made through the API is in `GET /v1/audit`, newest first, with who made it.

One server with `--auth`; changes are made by an admin token `alice` and an operator token `olga`, and the
log must then hold exactly those changes, in order, with the job before and after where a job changed.
Leaving the cluster is checked on a server of its own (it stops), with authentication off (`anonymous`).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import Node, job, running, wait_for

BOOTSTRAP = "bootstrap-" + uuid.uuid4().hex
ZERO = "0001-01-01T00:00:00Z"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Caller:
    """Requests with one token."""

    def __init__(self, node: Node, token: str) -> None:
        self.node = node
        self.headers = bearer(token)

    def call(self, method: str, path: str, expect: int = 200, **kw: Any) -> httpx.Response:
        response = self.node.request(method, path, headers=self.headers, **kw)
        assert response.status_code == expect, f"{method} {path}: {response.status_code} {response.text}"
        return response


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[Node]:
    env = {"DKRON_NATS_BOOTSTRAP_TOKEN": BOOTSTRAP}
    with running(Node(tmp_path / "data", extra=["--auth"], env=env)) as node:
        yield node


def _token(node: Node, name: str, role: str) -> Caller:
    created = Caller(node, BOOTSTRAP).call("POST", "/v1/tokens", 201, json={"name": name, "role": role})
    return Caller(node, created.json()["token"])


def _audit(caller: Caller, query: str = "?_start=0&_end=1000") -> httpx.Response:
    return caller.call("GET", "/v1/audit" + query)


def _runs(caller: Caller, name: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = caller.call("GET", f"/v1/jobs/{name}/executions").json()
    return found


def _make_every_kind_of_change(alice: Caller, olga: Caller) -> str:
    """The changes, in order; returns the id of the execution that was cancelled."""
    alice.call("POST", "/v1/jobs", 201, json=job("audited", command="echo one"))
    alice.call("POST", "/v1/jobs", 201, json=job("audited", command="echo two"))
    alice.call("PATCH", "/v1/jobs", 201, json=job("audited", command="echo three"))
    olga.call("POST", "/v1/jobs/audited/toggle")
    olga.call("POST", "/v1/jobs/audited/toggle")
    olga.call("POST", "/v1/jobs/audited/run?force=true")
    wait_for(
        lambda: alice.call("GET", "/v1/jobs/audited").json()["success_count"] == 1,
        what="the run of audited to be counted",
    )
    alice.call("DELETE", "/v1/jobs/audited/executions")
    alice.call("POST", "/v1/jobs", 201, json=job("sleeper", command="sleep 30"))
    olga.call("POST", "/v1/jobs/sleeper/run")
    running_one = wait_for(
        lambda: next((e for e in _runs(alice, "sleeper") if e["finished_at"] == ZERO), None),
        what="sleeper to be running",
    )
    olga.call("POST", f"/v1/jobs/sleeper/executions/{running_one['id']}/cancel", 202)
    for kind in ("?scheduling=true", ""):
        alice.call("POST", "/v1/pause" + kind)
        alice.call("POST", "/v1/unpause" + kind)
    restore = json.dumps([job("restored")]).encode()
    alice.call("POST", "/v1/restore", files={"file": ("jobs.json", restore)})
    alice.call("POST", "/v1/tokens", 201, json={"name": "temp", "role": "read"})
    alice.call("DELETE", "/v1/tokens/temp")
    alice.call("DELETE", "/v1/jobs/audited")
    return str(running_one["id"])


def test_every_change_is_recorded_with_who_and_the_job_before_and_after(secured: Node) -> None:
    alice = _token(secured, "alice", "admin")
    olga = _token(secured, "olga", "operator")
    cancelled = _make_every_kind_of_change(alice, olga)

    log = _audit(alice)
    entries = log.json()
    assert int(log.headers["X-Total-Count"]) == len(entries)
    oldest_first = [(e["who"], e["action"], e["target"]) for e in reversed(entries)]
    assert oldest_first == [
        ("bootstrap", "token.create", "alice"),
        ("bootstrap", "token.create", "olga"),
        ("alice", "job.create", "audited"),
        ("alice", "job.update", "audited"),
        ("alice", "job.update", "audited"),
        ("olga", "job.toggle", "audited"),
        ("olga", "job.toggle", "audited"),
        ("olga", "job.run", "audited"),
        ("alice", "executions.delete", "audited"),
        ("alice", "job.create", "sleeper"),
        ("olga", "job.run", "sleeper"),
        ("olga", "execution.cancel", f"sleeper/{cancelled}"),
        ("alice", "pause", "scheduling"),
        ("alice", "unpause", "scheduling"),
        ("alice", "pause", "submissions"),
        ("alice", "unpause", "submissions"),
        ("alice", "job.create", "restored"),
        ("alice", "token.create", "temp"),
        ("alice", "token.revoke", "temp"),
        ("alice", "job.delete", "audited"),
    ]
    old = list(reversed(entries))
    assert {e["role"] for e in old if e["who"] == "olga"} == {"operator"}
    assert {e["role"] for e in old if e["who"] == "alice"} == {"admin"}
    times = [datetime.fromisoformat(e["time"]) for e in entries]
    assert times == sorted(times, reverse=True)

    created, updated, patched, disabled, enabled, run = old[2:8]
    assert created["before"] is None
    assert created["after"]["executor_config"]["command"] == "echo one"
    assert updated["before"]["executor_config"]["command"] == "echo one"
    assert updated["after"]["executor_config"]["command"] == "echo two"
    assert patched["after"]["executor_config"]["command"] == "echo three"
    assert (disabled["before"]["disabled"], disabled["after"]["disabled"]) == (False, True)
    assert (enabled["before"]["disabled"], enabled["after"]["disabled"]) == (True, False)
    assert run["after"] == {"force": True}
    cleared = old[8]
    assert (cleared["before"]["success_count"], cleared["after"]["success_count"]) == (1, 0)
    paused = old[12]
    assert paused["before"]["scheduling_paused"] is False
    assert paused["after"]["scheduling_paused"] is True
    token_made, token_revoked, deleted = old[17:20]
    assert token_made["after"]["role"] == "read"
    assert "token" not in token_made["after"]
    assert token_revoked["before"]["name"] == "temp"
    assert deleted["before"]["name"] == "audited"
    assert deleted["after"] is None
    assert "dkn_" not in log.text  # no token is ever written to the log


def test_the_log_pages_newest_first_and_only_admins_read_it(secured: Node) -> None:
    alice = _token(secured, "alice", "admin")
    olga = _token(secured, "olga", "operator")
    for i in range(5):
        alice.call("POST", "/v1/jobs", 201, json=job(f"paged-{i}"))
    everything = _audit(alice).json()
    assert len(everything) == 7  # two token creations, five jobs
    page = _audit(alice, "?_start=1&_end=3")
    assert int(page.headers["X-Total-Count"]) == 7
    assert page.json() == everything[1:3]
    assert [e["target"] for e in _audit(alice, "?_start=0&_end=2").json()] == ["paged-4", "paged-3"]
    assert _audit(alice, "?_start=50&_end=60").json() == []
    default_page = _audit(alice, "")
    assert default_page.json() == everything  # fewer than one default page of 50
    assert olga.call("GET", "/v1/audit", 403).text.startswith("forbidden")


def test_leave_is_recorded_and_the_log_survives_a_restart_with_auth_off(tmp_path: Path) -> None:
    node = Node(tmp_path / "data").start()
    try:
        node.wait_leader()
        assert node.post("/v1/jobs", json=job("before-leaving")).status_code == 201
        assert node.post("/v1/leave").status_code == 200
        assert node.wait_exit(40) == 0
        node.start().wait_leader()
        entries = node.get("/v1/audit").json()
    finally:
        node.stop()
    assert [(e["who"], e["role"], e["action"], e["target"]) for e in entries] == [
        ("anonymous", "admin", "leave", "n1"),
        ("anonymous", "admin", "job.create", "before-leaving"),
    ]
