"""`dkron-nats import` from a Dkron backup file and over HTTP from a Dkron API; each with a dry run first."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from tests.harness import Node, free_port, running
from tests.integration.test_cli_jobs import cli, cli_json, shell_job


def dkron_job(name: str, **fields: Any) -> dict[str, Any]:
    """A job as Dkron's GET /v1/jobs and its backups write it: every field, counters and status included."""
    body: dict[str, Any] = {
        "id": name,
        "name": name,
        "displayname": "",
        "timezone": "",
        "schedule": "",
        "owner": "",
        "owner_email": "",
        "success_count": 12,
        "error_count": 3,
        "last_success": "2024-05-01T10:00:00.123456789Z",
        "last_error": "2024-04-30T10:00:00Z",
        "disabled": False,
        "tags": None,
        "metadata": None,
        "retries": 0,
        "dependent_jobs": None,
        "parent_job": "",
        "processors": {},
        "concurrency": "allow",
        "executor": "shell",
        "executor_config": {"command": f"echo {name}", "shell": "true"},
        "status": "success",
        "next": "0001-01-01T00:00:00Z",
        "ephemeral": False,
        "starts_at": None,
        "expires_at": None,
    }
    return body | fields


def test_a_dkron_backup_with_a_parent_and_two_children(server: Node, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    parent, first, second = f"nightly-{tag}", f"report-{tag}", f"cleanup-{tag}"
    backup = [  # children first, as a backup may list them
        dkron_job(first, parent_job=parent),
        dkron_job(second, parent_job=parent, retries=2),
        dkron_job(
            parent,
            schedule="0 30 2 * * *",
            timezone="Europe/Berlin",
            displayname="Nightly",
            owner_email="ops@example.com",
            tags={"role": "batch"},
            metadata={"team": "data"},
            concurrency="forbid",
            dependent_jobs=[first, second],
            next="2024-05-02T00:30:00Z",
        ),
    ]
    path = tmp_path / "dkron-backup.json"
    path.write_text(json.dumps(backup))
    names = [parent, first, second]

    dry = cli("import", str(path), "--dry-run", server=server)
    assert dry.returncode == 0, dry.stderr
    _, *rows = dry.stdout.splitlines()
    assert [row.split() for row in rows] == [[name, "would", "create"] for name in names]
    assert "dry run: nothing was written" in dry.stderr
    assert [server.get(f"/v1/jobs/{name}").status_code for name in names] == [404, 404, 404]

    done = cli_json("import", str(path), server=server)
    assert [(j["name"], j["action"], j["written"]) for j in done["jobs"]] == [
        (n, "create", True) for n in names
    ]
    stored = server.get(f"/v1/jobs/{parent}").json()
    assert (stored["schedule"], stored["timezone"], stored["concurrency"]) == (
        "0 30 2 * * *",
        "Europe/Berlin",
        "forbid",
    )
    assert (stored["tags"], stored["metadata"], stored["owner_email"]) == (
        {"role": "batch"},
        {"team": "data"},
        "ops@example.com",
    )
    assert sorted(stored["dependent_jobs"]) == sorted([first, second])
    assert (stored["success_count"], stored["status"]) == (0, "")  # counters are the new cluster's own
    assert server.get(f"/v1/jobs/{second}").json()["parent_job"] == parent
    assert server.get(f"/v1/jobs/{second}").json()["retries"] == 2

    again = cli_json("import", str(path), server=server)
    assert [(j["name"], j["action"], j["written"]) for j in again["jobs"]] == [
        (n, "unchanged", False) for n in names
    ]


def test_a_file_that_is_not_a_backup_exits_1(server: Node, tmp_path: Path) -> None:
    path = tmp_path / "one-job.json"
    path.write_text(json.dumps(dkron_job("lonely")))
    result = cli("import", str(path), server=server)
    assert result.returncode == 1
    assert "JSON array" in result.stderr


def test_import_over_http_from_another_server(server: Node, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    parent, child, same, differs = f"etl-{tag}", f"load-{tag}", f"same-{tag}", f"differs-{tag}"
    with running(Node(tmp_path / "source", name="source")) as source:
        for body in (
            shell_job(parent, "echo extract", schedule="@every 1h", metadata={"team": "etl"}),
            shell_job(child, "echo load", schedule="", parent_job=parent),
            shell_job(same, "echo same"),
            shell_job(differs, "echo new"),
        ):
            assert source.post("/v1/jobs", json=body).status_code == 201
        assert server.post("/v1/jobs", json=shell_job(same, "echo same")).status_code == 201
        assert server.post("/v1/jobs", json=shell_job(differs, "echo old")).status_code == 201

        dry = cli_json("import", "--from-dkron", source.url, "--dry-run", server=server)
        plan = {j["name"]: (j["action"], j["written"]) for j in dry["jobs"]}
        assert plan == {
            parent: ("create", False),
            child: ("create", False),
            same: ("unchanged", False),
            differs: ("update", False),
        }
        assert [j["name"] for j in dry["jobs"]].index(parent) < [j["name"] for j in dry["jobs"]].index(child)
        assert server.get(f"/v1/jobs/{parent}").status_code == 404
        assert server.get(f"/v1/jobs/{differs}").json()["executor_config"]["command"] == "echo old"

        done = cli_json("import", "--from-dkron", source.url, server=server)
        assert {j["name"]: j["action"] for j in done["jobs"]} == {
            parent: "create",
            child: "create",
            same: "unchanged",
            differs: "update",
        }
        assert next(j for j in done["jobs"] if j["name"] == differs)["changed"] == ["executor_config"]
        assert server.get(f"/v1/jobs/{parent}").json()["dependent_jobs"] == [child]
        assert server.get(f"/v1/jobs/{differs}").json()["executor_config"]["command"] == "echo new"
        again = cli_json("import", "--from-dkron", source.url, server=server)
        assert {j["action"] for j in again["jobs"]} == {"unchanged"}


def test_an_unreachable_dkron_exits_4_naming_the_option(server: Node) -> None:
    result = cli("import", "--from-dkron", f"http://127.0.0.1:{free_port()}", server=server)
    assert result.returncode == 4
    assert "--from-dkron" in result.stderr
