"""Write a data dir with this version of dkron-nats, for the upgrade test of every later version.

    python -m tests.stores.write tests/stores/<version>

makes `<version>.tar.gz` (the stopped node's data dir) and `<version>.json` (what its API answered just
before the stop: jobs, executions, job state, tokens, audit). `tests/integration/test_upgrade.py` starts the
current code on each stored data dir and checks that the API still answers all of it.
"""

from __future__ import annotations

import functools
import json
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from tests.harness import Node, job, running, wait_for

BOOTSTRAP = "store-bootstrap-token-0123456789abcdef"
"""The admin token the stored node was started with (DKRON_NATS_BOOTSTRAP_TOKEN); a test secret only."""
NODE = "n1"
JOBS = ("nightly", "flaky", "child", "paused", "with-params")


def _jobs() -> list[dict[str, Any]]:
    return [
        job(
            "nightly",
            "0 30 2 * * *",
            "echo nightly",
            timezone="Europe/Berlin",
            retries=2,
            metadata={"team": "payroll"},
            tags={"role": "dkron"},
            displayname="Nightly payroll",
        ),
        job("flaky", "@every 24h", "exit 3", concurrency="forbid", retries=0),
        job("child", "", "echo child", parent_job="nightly"),
        job("paused", "@every 1m", "true", disabled=True),
        job(
            "with-params",
            "@manually",
            "echo $GREETING",
            parameters=["GREETING"],
            executor_config={"command": "echo $GREETING", "shell": "true"},
        ),
    ]


def _api(node: Node) -> dict[str, Any]:
    auth = {"Authorization": f"Bearer {BOOTSTRAP}"}
    answers: dict[str, Any] = {"jobs": {}, "executions": {}}
    for name in JOBS:
        answers["jobs"][name] = node.get(f"/v1/jobs/{name}", headers=auth).json()
        answers["executions"][name] = node.get(f"/v1/jobs/{name}/executions", headers=auth).json()
    answers["tokens"] = node.get("/v1/tokens", headers=auth).json()
    answers["audit"] = node.get("/v1/audit", headers=auth).json()
    return answers


def write(target: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        node = Node(data_dir, name=NODE, extra=["--auth"], env={"DKRON_NATS_BOOTSTRAP_TOKEN": BOOTSTRAP})
        auth = {"Authorization": f"Bearer {BOOTSTRAP}"}
        with running(node):
            for body in _jobs():
                node.post("/v1/jobs", json=body, headers=auth).raise_for_status()
            reader = node.post("/v1/tokens", json={"name": "ci-reader", "role": "read"}, headers=auth)
            reader.raise_for_status()
            for name, runs in (("nightly", 2), ("flaky", 1)):
                for done in range(1, runs + 1):
                    node.post(f"/v1/jobs/{name}", headers=auth).raise_for_status()
                    wait_for(functools.partial(_done, node, name, done), 30, f"{name} to finish")
            wait_for(lambda: _done(node, "child", 2), 30, "the dependent runs")
            answers = {**_api(node), "reader_token": reader.json()["token"]}
        target.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(target.parent / f"{target.name}.tar.gz", "w:gz") as tar:
            tar.add(
                data_dir, arcname="data", filter=lambda info: None if info.name.endswith(".log") else info
            )
    (target.parent / f"{target.name}.json").write_text(json.dumps(answers, indent=1, sort_keys=True) + "\n")


def _done(node: Node, name: str, count: int) -> bool:
    auth = {"Authorization": f"Bearer {BOOTSTRAP}"}
    runs = node.get(f"/v1/jobs/{name}/executions", headers=auth).json()
    return sum(1 for e in runs if e["finished_at"] != "0001-01-01T00:00:00Z") >= count


if __name__ == "__main__":
    write(Path(sys.argv[1]))
