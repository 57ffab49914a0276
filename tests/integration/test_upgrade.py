"""A data dir written by an earlier release starts on this code with everything intact.

Each `tests/stores/<version>.tar.gz` is a stopped node's data dir written by that release
(`python -m tests.stores.write`), and `<version>.json` what its API answered just before it stopped: every
job, its state and counters, every execution record, the tokens and the audit log. The upgraded node must
answer the same (fields added since may appear; none may change or go), keep its tokens working, and go on
running jobs.
"""

from __future__ import annotations

import asyncio
import json
import tarfile
from pathlib import Path
from typing import Any

import nats
import pytest

from tests.harness import Node, running, wait_for
from tests.stores.write import BOOTSTRAP, NODE

STORES = sorted((Path(__file__).parents[1] / "stores").glob("*.tar.gz"))
VOLATILE = {"next"}
"""Job fields that depend on when they are read (the next fire time)."""


def _kept(before: Any, after: Any, where: str) -> list[str]:
    """Where `after` lost or changed something `before` had (new keys in `after` are fine)."""
    if isinstance(before, dict) and isinstance(after, dict):
        return [
            problem
            for key, value in before.items()
            if key not in VOLATILE
            for problem in (
                _kept(value, after[key], f"{where}.{key}") if key in after else [f"{where}.{key}: gone"]
            )
        ]
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [
            p
            for i, (b, a) in enumerate(zip(before, after, strict=True))
            for p in _kept(b, a, f"{where}[{i}]")
        ]
    return [] if before == after else [f"{where}: {before!r} -> {after!r}"]


@pytest.mark.parametrize("store", STORES, ids=[s.name.removesuffix(".tar.gz") for s in STORES])
def test_a_store_of_an_earlier_release_keeps_every_job_record_counter_token_and_audit_entry(
    store: Path, tmp_path: Path
) -> None:
    with tarfile.open(store) as tar:
        tar.extractall(tmp_path, filter="data")
    expected = json.loads(store.with_name(store.name.removesuffix(".tar.gz") + ".json").read_text())
    # Asked for partitions, a store of an earlier release keeps the one partition it was made with.
    extra = ["--auth", "--partitions", "4"]
    node = Node(tmp_path / "data", name=NODE, extra=extra, env={"DKRON_NATS_BOOTSTRAP_TOKEN": BOOTSTRAP})
    admin = {"Authorization": f"Bearer {BOOTSTRAP}"}
    with running(node):
        problems: list[str] = []
        for name, job in expected["jobs"].items():
            problems += _kept(job, node.get(f"/v1/jobs/{name}", headers=admin).json(), f"job {name}")
            # Every stored record is still there, unchanged; slots that fell due since the store was written
            # add records of their own (a nightly job's missed slot), which are not the store's to check.
            runs = {run["id"]: run for run in node.get(f"/v1/jobs/{name}/executions", headers=admin).json()}
            for run in expected["executions"][name]:
                where = f"execution {run['id']} of {name}"
                problems += _kept(run, runs[run["id"]], where) if run["id"] in runs else [f"{where}: gone"]
        problems += _kept(expected["tokens"], node.get("/v1/tokens", headers=admin).json(), "tokens")
        audit = node.get("/v1/audit", headers=admin).json()
        problems += _kept(expected["audit"], audit[: len(expected["audit"])], "audit")
        assert not problems, "\n".join(problems)

        assert [row["partition"] for row in node.get("/v1/partitions", headers=admin).json()] == [0]

        reader = {"Authorization": f"Bearer {expected['reader_token']}"}
        assert node.get("/v1/jobs", headers=reader).status_code == 200
        assert node.post("/v1/jobs/nightly", headers=reader).status_code == 403
        # The store is live: a job runs, with a parameter, and its counters go on from the stored ones.
        run = node.post("/v1/jobs/with-params", json={"env": {"GREETING": "upgraded"}}, headers=admin)
        assert run.status_code == 200, run.text
        wait_for(
            lambda: node.get("/v1/jobs/with-params", headers=admin).json()["success_count"] == 1,
            30,
            "a run on the upgraded store",
        )
        (record,) = node.get("/v1/jobs/with-params/executions", headers=admin).json()
        assert record["output"] == "upgraded\n"
        # 0.1.x's per-job launch cursors were moved into the decision log, and their bucket is gone.
        streams = asyncio.run(_stream_names(node))
        assert "KV_dkron-cursors" not in streams
        assert "DKRON_DECISIONS" in streams


async def _stream_names(node: Node) -> set[str]:
    nc = await nats.connect(**node.nats_options())
    try:
        return {str(info.config.name) for info in await nc.jetstream().streams_info()}
    finally:
        await nc.close()
