"""`dkron-nats jobs|executions|members|leader|pause|unpause` against a real server: tables, JSON, exit codes.

Exit codes: 0 done, 1 refused or a bad input file, 2 usage, 3 not found, 4 unreachable, 5 conflict/busy.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import uuid
from pathlib import Path
from typing import Any

import anyio
import nats
import pytest
import yaml

from dkron_nats.kv.buckets import JOBS
from dkron_nats.names import job_key
from tests.harness import DKRON_NATS, Node, free_port, job, wait_for


def cli(
    *args: str, server: Node | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `dkron-nats ARGS` against `server` (env DKRON_NATS_API_URL); no token is inherited by accident."""
    clean = {k: v for k, v in os.environ.items() if k not in ("DKRON_NATS_TOKEN", "DKRON_NATS_API_URL")}
    if server is not None:
        clean["DKRON_NATS_API_URL"] = server.url
    return subprocess.run(
        [*DKRON_NATS, *args], capture_output=True, text=True, timeout=60, env={**clean, **(env or {})}
    )


def cli_json(*args: str, server: Node) -> Any:
    result = cli(*args, "--json", server=server)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def shell_job(name: str, command: str, **fields: Any) -> dict[str, Any]:
    body = job(name, command=command, **fields)
    body["executor_config"]["shell"] = "true"
    return body


def stored_revisions(node: Node, names: list[str]) -> dict[str, int]:
    """Each job's revision in the JetStream KV bucket: it moves on every write, even an identical one."""

    async def read() -> dict[str, int]:
        nc = await nats.connect(**node.nats_options())
        try:
            kv = await nc.jetstream().key_value(JOBS)
            entries = {name: await kv.get(job_key(name)) for name in names}
            return {name: entry.revision or 0 for name, entry in entries.items()}
        finally:
            await nc.close()

    return anyio.run(read)


def audited(node: Node, names: list[str]) -> list[tuple[str, str]]:
    """(action, job) of the audit log's entries about these jobs."""
    entries = node.get("/v1/audit", params={"_end": "1000"}).json()
    return [(e["action"], e["target"]) for e in entries if e["target"] in names]


def test_apply_the_same_file_twice_writes_nothing_the_second_time(server: Node, tmp_path: Path) -> None:
    parent, child, follower = unique("parent"), unique("child"), unique("follower")
    spec = tmp_path / "jobs.yaml"
    spec.write_text(
        f"""# children first: apply orders parents before them
- name: {child}
  parent_job: {parent}
  executor: shell
  executor_config: {{command: "echo child"}}
- name: {follower}
  depends_on: [{{job: {parent}, on: success}}]
  executor: shell
  executor_config: {{command: "echo follower"}}
- name: {parent}
  schedule: "@every 1h"
  timezone: Europe/Berlin
  starts_at: 2030-01-01T00:00:00Z
  metadata: {{team: ops}}
  dst_policy: {{gap: skip}}
  retry_backoff: {{initial: 2s}}
  executor: shell
  executor_config: {{command: "echo parent"}}
"""
    )
    names = [parent, child, follower]
    first = cli_json("jobs", "apply", "-f", str(spec), server=server)
    assert first["dry_run"] is False
    assert [(j["name"], j["action"], j["written"]) for j in first["jobs"]] == [
        (parent, "create", True),
        (child, "create", True),
        (follower, "create", True),
    ]
    assert server.get(f"/v1/jobs/{parent}").json()["dependent_jobs"] == [child]
    revisions = stored_revisions(server, names)

    again = cli("jobs", "apply", "-f", str(spec), server=server)
    assert again.returncode == 0, again.stderr
    header, *rows = again.stdout.splitlines()
    assert header.split() == ["JOB", "FILE", "ACTION", "CHANGED"]
    assert sorted(row.split() for row in rows) == sorted([name, str(spec), "unchanged"] for name in names)
    assert stored_revisions(server, names) == revisions
    assert sorted(audited(server, names)) == sorted(("job.create", name) for name in names)

    spec.write_text(spec.read_text().replace('schedule: "@every 1h"', 'schedule: "@every 2h"'))
    dry = cli_json("jobs", "apply", "-f", str(spec), "--dry-run", server=server)
    first_planned = dry["jobs"][0]
    assert (
        first_planned["name"],
        first_planned["action"],
        first_planned["changed"],
        first_planned["written"],
    ) == (
        parent,
        "update",
        ["schedule"],
        False,
    )
    assert server.get(f"/v1/jobs/{parent}").json()["schedule"] == "@every 1h"

    changed = cli_json("jobs", "apply", "-f", str(spec), server=server)
    assert [(j["name"], j["action"]) for j in changed["jobs"]] == [
        (parent, "update"),
        (child, "unchanged"),
        (follower, "unchanged"),
    ]
    assert server.get(f"/v1/jobs/{parent}").json()["schedule"] == "@every 2h"


def test_a_json_file_with_one_job_and_input_errors_exit_1(server: Node, tmp_path: Path) -> None:
    name = unique("single")
    one = tmp_path / "one.json"
    one.write_text(json.dumps(shell_job(name, "echo one")))
    assert cli_json("jobs", "apply", "-f", str(one), server=server)["jobs"][0]["action"] == "create"

    typo = tmp_path / "typo.yaml"
    typo.write_text(f"name: {name}\nschedul: '@every 1m'\n")
    refused = cli("jobs", "apply", "-f", str(typo), server=server)
    assert refused.returncode == 1
    assert "schedul" in refused.stderr

    broken = tmp_path / "broken.yaml"
    broken.write_text("- name: [unclosed\n")
    assert cli("jobs", "apply", "-f", str(broken), server=server).returncode == 1

    a, b = unique("cycle"), unique("cycle")
    cycle = tmp_path / "cycle.yaml"
    cycle.write_text(f"- {{name: {a}, parent_job: {b}}}\n- {{name: {b}, parent_job: {a}}}\n")
    looped = cli("jobs", "apply", "-f", str(cycle), server=server)
    assert looped.returncode == 1
    assert "cycle" in looped.stderr

    good, bad = unique("good"), unique("bad")
    mixed = tmp_path / "mixed.yaml"
    mixed.write_text(
        f"- {{name: {bad}, schedule: 'not a schedule'}}\n- {{name: {good}, schedule: '@manually'}}\n"
    )
    partly = cli("jobs", "apply", "-f", str(mixed), "--json", server=server)
    assert partly.returncode == 1  # the server refused one job (400); the other was still written
    outcome = {j["name"]: j for j in json.loads(partly.stdout)["jobs"]}
    assert outcome[bad]["written"] is False
    assert "schedule" in outcome[bad]["error"]
    assert outcome[good]["written"] is True
    assert server.get(f"/v1/jobs/{good}").status_code == 200


def test_list_pages_through_the_server_and_filters(server: Node, tmp_path: Path) -> None:
    prefix = unique("page")
    names = [f"{prefix}-{i}" for i in range(5)]
    spec = tmp_path / "many.yaml"
    spec.write_text(
        "".join(
            f"- {{name: {n}, schedule: '@manually', metadata: {{batch: b{i % 2}}}}}\n"
            for i, n in enumerate(names)
        )
    )
    assert cli("jobs", "apply", "-f", str(spec), server=server).returncode == 0

    first_page = cli_json("jobs", "list", "--search", prefix, "--limit", "2", server=server)
    assert [j["name"] for j in first_page] == names[:2]
    every = cli_json("jobs", "list", "--search", prefix, "--limit", "2", "--all", server=server)
    assert [j["name"] for j in every] == names

    table = cli("jobs", "list", "--search", prefix, "--limit", "2", server=server)
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split()[:4] == ["NAME", "SCHEDULE", "STATUS", "DISABLED"]
    assert [row.split()[:3] for row in rows] == [[n, "@manually", "untriggered"] for n in names[:2]]
    assert "showing 2 of 5 jobs; --all" in table.stderr

    odd = cli_json("jobs", "list", "--search", prefix, "--metadata", "batch=b1", "--all", server=server)
    assert [j["name"] for j in odd] == [names[1], names[3]]
    none = cli_json("jobs", "list", "--search", prefix, "--status", "success", server=server)
    assert none == []


def test_get_run_toggle_delete_and_not_found_exits_3(server: Node) -> None:
    name = unique("lifecycle")
    assert server.post("/v1/jobs", json=shell_job(name, "echo hello")).status_code == 201

    shown = cli("jobs", "get", name, server=server)
    assert shown.returncode == 0, shown.stderr
    assert any(line.split() == ["schedule", "@manually"] for line in shown.stdout.splitlines())
    assert cli_json("jobs", "get", name, server=server) == server.get(f"/v1/jobs/{name}").json()

    ran = cli("jobs", "run", name, server=server)
    assert (ran.returncode, ran.stderr.strip()) == (0, f"started job {name}")
    done = wait_for(lambda: _finished(server, name), what="the manual run to finish")
    assert done[0]["success"] is True
    assert ran.stdout.split() == [done[0]["id"]]  # the id of the execution it started

    assert cli_json("jobs", "toggle", name, server=server)["disabled"] is True
    disabled = cli("jobs", "run", name, server=server)
    assert disabled.returncode == 3
    assert "disabled" in disabled.stderr
    toggled = cli("jobs", "toggle", name, server=server)
    assert (toggled.returncode, toggled.stdout.strip()) == (0, f"job {name} is now enabled")

    assert cli_json("jobs", "delete", name, server=server)["name"] == name
    for args in (
        ["jobs", "get", name],
        ["jobs", "delete", name],
        ["jobs", "run", name],
        ["executions", "list", name],
    ):
        missing = cli(*args, server=server)
        assert missing.returncode == 3, (args, missing.stderr)
        assert name in missing.stderr


def _finished(node: Node, name: str) -> list[dict[str, Any]] | None:
    found = node.get(f"/v1/jobs/{name}/executions").json()
    done = [e for e in found if e["finished_at"] != "0001-01-01T00:00:00Z"]
    return done or None


def _running_id(node: Node, name: str) -> str | None:
    found = node.get(f"/v1/jobs/{name}/executions").json()
    running = [e["id"] for e in found if e["finished_at"] == "0001-01-01T00:00:00Z"]
    return running[0] if running else None


def test_executions_list_output_follow_and_cancel(server: Node) -> None:
    name = unique("talker")
    command = "for i in 1 2 3; do echo line$i; sleep 0.3; done"
    assert server.post("/v1/jobs", json=shell_job(name, command)).status_code == 201
    assert cli("jobs", "run", name, server=server).returncode == 0
    execution = wait_for(lambda: cli_json("executions", "list", name, server=server), what="an execution")[0][
        "id"
    ]

    followed = cli("executions", "output", name, execution, "--follow", server=server)
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout == "line1\nline2\nline3\n"
    assert f"execution {execution} succeeded" in followed.stderr

    events = [
        json.loads(line)
        for line in cli(
            "executions", "output", name, execution, "-f", "--json", server=server
        ).stdout.splitlines()
    ]
    assert "".join(e["output"] for e in events if e["event"] == "output") == "line1\nline2\nline3\n"
    assert events[-1]["event"] == "end"
    assert events[-1]["execution"]["success"] is True

    plain = cli("executions", "output", name, execution, server=server)
    assert (plain.returncode, plain.stdout) == (0, "line1\nline2\nline3\n")
    assert (
        cli_json("executions", "output", name, execution, server=server)["output"] == "line1\nline2\nline3\n"
    )

    table = cli("executions", "list", name, server=server)
    header, row = table.stdout.splitlines()
    assert header.split() == ["ID", "STARTED_AT", "FINISHED_AT", "STATUS", "NODE_NAME", "ATTEMPT"]
    assert row.split()[0] == execution
    assert row.split()[3] == "success"

    finished = cli("executions", "cancel", name, execution, server=server)
    assert finished.returncode == 5  # 409: it has already finished
    assert "already finished" in finished.stderr
    for follow in ([], ["--follow"]):
        unknown = cli("executions", "output", name, "no-such-execution", *follow, server=server)
        assert unknown.returncode == 3
        assert "no-such-execution" in unknown.stderr


def test_a_busy_forbid_job_exits_5_until_forced_and_cancel_stops_it(server: Node) -> None:
    name = unique("sleeper")
    body = shell_job(name, "sleep 60", concurrency="forbid")
    assert server.post("/v1/jobs", json=body).status_code == 201
    assert cli("jobs", "run", name, server=server).returncode == 0
    first = wait_for(lambda: _running_id(server, name), what="the first launch to run")

    busy = cli("jobs", "run", name, server=server)
    assert busy.returncode == 5
    assert "409" in busy.stderr
    forced = cli("jobs", "run", name, "--force", server=server)
    assert forced.returncode == 0, forced.stderr
    wait_for(lambda: len(server.get(f"/v1/jobs/{name}/executions").json()) == 2, what="the forced launch")

    for execution in [e["id"] for e in server.get(f"/v1/jobs/{name}/executions").json()]:
        cancelled = cli("executions", "cancel", name, execution, server=server)
        assert cancelled.returncode == 0, cancelled.stderr
    ended = wait_for(
        lambda: (lambda f: f if f and len(f) == 2 else None)(_finished(server, name)), what="both to stop"
    )
    assert [e["success"] for e in ended] == [False, False]
    assert first in [e["id"] for e in ended]


def test_pause_makes_writes_exit_5_and_unpause_lifts_it(server: Node, tmp_path: Path) -> None:
    spec = tmp_path / "new.yaml"
    spec.write_text(f"name: {unique('paused')}\nschedule: '@manually'\n")
    try:
        assert cli_json("pause", server=server) == {"paused": True, "scheduling_paused": False}
        refused = cli("jobs", "apply", "-f", str(spec), server=server)
        assert refused.returncode == 5
        assert "unpause" in refused.stderr
    finally:
        unpaused = cli("unpause", server=server)
    assert unpaused.returncode == 0, unpaused.stderr
    assert unpaused.stdout.splitlines() == ["submissions: accepted", "scheduling: running"]
    assert cli("jobs", "apply", "-f", str(spec), server=server).returncode == 0

    try:
        assert cli_json("pause", "--scheduling", server=server)["scheduling_paused"] is True
        assert server.get("/v1/pause").json() == {"paused": False, "scheduling_paused": True}
    finally:
        assert cli_json("unpause", "--scheduling", server=server)["scheduling_paused"] is False


def test_members_and_leader(server: Node) -> None:
    members = cli_json("members", server=server)
    assert server.name in [m["Name"] for m in members]
    table = cli("members", server=server)
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["NAME", "ADDR", "PORT", "STATUS", "SERVER", "TAGS"]
    assert [server.name, "127.0.0.1", str(server.http_port), "alive", "true"] in [r.split()[:5] for r in rows]

    assert cli_json("leader", server=server)["Name"] == server.name
    assert cli("leader", server=server).stdout.splitlines()[1].split()[0] == server.name


@pytest.mark.parametrize(
    "args",
    [["jobs", "list"], ["jobs", "get", "x"], ["members"], ["leader"], ["pause"], ["executions", "list", "x"]],
)
def test_an_unreachable_server_exits_4_naming_the_setting(args: list[str]) -> None:
    result = cli(*args, "--server", f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 4
    assert "cannot reach" in result.stderr
    assert "--server" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["jobs", "list", "--tag", "no-equals-sign"],
        ["jobs", "apply"],
        ["jobs", "get"],
        ["executions", "output", "only-job"],
        ["import"],
        ["import", "--from-dkron", "http://127.0.0.1:1", "also-a-file.json"],
    ],
)
def test_usage_errors_exit_2(args: list[str], tmp_path: Path) -> None:
    if args[-1] == "also-a-file.json":
        (tmp_path / "also-a-file.json").write_text("[]")
        args = [*args[:-1], str(tmp_path / "also-a-file.json")]
    result = cli(*args, "--server", "http://127.0.0.1:1")
    assert result.returncode == 2, result.stderr
    assert "Usage:" in result.stderr


def test_apply_is_declarative_a_key_removed_from_the_file_goes_back_to_its_default(
    server: Node, tmp_path: Path
) -> None:
    name = unique("declared")
    spec = tmp_path / "job.yaml"
    full = f"""name: {name}
schedule: '@manually'
retries: 2
concurrency: forbid
metadata: {{team: ops}}
executor: shell
executor_config: {{command: "echo hi", shell: "true"}}
"""
    spec.write_text(full)
    assert cli_json("jobs", "apply", "-f", str(spec), server=server)["jobs"][0]["action"] == "create"

    spec.write_text(full.replace("retries: 2\n", "").replace("concurrency: forbid\n", ""))
    applied = cli_json("jobs", "apply", "-f", str(spec), server=server)["jobs"][0]
    assert (applied["action"], applied["changed"]) == ("update", ["retries", "concurrency"])
    stored = server.get(f"/v1/jobs/{name}").json()
    assert (stored["retries"], stored["concurrency"]) == (0, "allow")

    spec.write_text(spec.read_text().replace(', shell: "true"', ""))
    planned = cli("jobs", "apply", "-f", str(spec), "--dry-run", server=server)
    assert planned.returncode == 0, planned.stderr
    assert '    executor_config.shell: "true" -> (unset)' in planned.stdout.splitlines()
    assert server.get(f"/v1/jobs/{name}").json()["executor_config"]["shell"] == "true"
    assert cli_json("jobs", "apply", "-f", str(spec), server=server)["jobs"][0]["action"] == "update"
    assert server.get(f"/v1/jobs/{name}").json()["executor_config"] == {"command": "echo hi"}
    assert cli_json("jobs", "apply", "-f", str(spec), server=server)["jobs"][0]["action"] == "unchanged"


def test_yaml_scalars_in_string_maps_become_strings_and_a_type_error_names_the_key_path(
    server: Node, tmp_path: Path
) -> None:
    name = unique("scalars")
    spec = tmp_path / "scalars.yaml"
    spec.write_text(
        f"name: {name}\nschedule: '@manually'\nmetadata: {{build: 42, ratio: 1.5, nightly: false}}\n"
        "executor: shell\nexecutor_config: {command: 'echo $((40 + 2))', shell: true}\n"
    )
    applied = cli("jobs", "apply", "-f", str(spec), server=server)
    assert applied.returncode == 0, applied.stderr
    stored = server.get(f"/v1/jobs/{name}").json()
    assert stored["executor_config"] == {"command": "echo $((40 + 2))", "shell": "true"}
    assert stored["metadata"] == {"build": "42", "ratio": "1.5", "nightly": "false"}

    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(
        f"- name: {unique('ok')}\n- name: {unique('bad')}\n  executor_config: {{shell: [1, 2]}}\n"
    )
    refused = cli("jobs", "apply", "-f", str(wrong), server=server)
    assert refused.returncode == 1
    assert f"{wrong}: jobs[1].executor_config.shell: expected a string" in refused.stderr


def test_the_getting_started_example_works_as_written(server: Node) -> None:
    doc = (Path(__file__).parents[2] / "docs" / "getting-started.md").read_text()
    body = json.loads(doc.split("curl localhost:8080/v1/jobs -XPOST -d '", 1)[1].split("'", 1)[0])
    body["name"] = name = unique(body["name"])  # the shared server: a name of its own
    assert server.post("/v1/jobs", json=body).status_code == 201
    try:
        assert cli("jobs", "run", name, server=server).returncode == 0
        done = wait_for(lambda: _finished(server, name), what="the example's run")
        assert done[0]["output"] == f"hello from {socket.gethostname()}\n"
    finally:
        server.request("DELETE", f"/v1/jobs/{name}")


def test_run_follow_streams_each_attempt_and_exits_with_the_jobs_status(server: Node) -> None:
    good, bad = unique("follow-ok"), unique("follow-bad")
    assert server.post("/v1/jobs", json=shell_job(good, "echo one; sleep 0.3; echo two")).status_code == 201
    failing = shell_job(bad, "echo attempt $DKRON_ATTEMPT; exit 3", retries=1)
    assert server.post("/v1/jobs", json=failing).status_code == 201

    followed = cli("jobs", "run", good, "--follow", server=server)
    assert followed.returncode == 0, followed.stderr
    execution, *output = followed.stdout.splitlines()
    assert output == ["one", "two"]
    assert server.get(f"/v1/jobs/{good}/executions/{execution}").json()["success"] is True
    assert f"execution {execution} on {server.name} succeeded" in followed.stderr

    retried = cli("jobs", "run", bad, "--follow", server=server)
    assert retried.returncode == 6, retried.stderr  # the job failed: its last attempt too
    first, *output = retried.stdout.splitlines()
    assert [line for line in output if line.startswith("attempt")] == ["attempt 1", "attempt 2"], output
    assert f"execution {first}=2 on {server.name} failed" in retried.stderr


def test_output_formats_and_a_job_shown_as_yaml_applies_back_unchanged(server: Node) -> None:
    name = unique("formats")
    body = shell_job(name, "echo formats", retries=1, metadata={"team": "ops"})
    assert server.post("/v1/jobs", json=body).status_code == 201

    shown = cli("jobs", "get", name, "-o", "yaml", server=server)
    assert shown.returncode == 0, shown.stderr
    assert yaml.safe_load(shown.stdout) == server.get(f"/v1/jobs/{name}").json()
    back = subprocess.run(
        [*DKRON_NATS, "jobs", "apply", "-f", "-", "-o", "json"],
        input=shown.stdout,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DKRON_NATS_API_URL": server.url},
    )
    assert back.returncode == 0, back.stderr
    assert json.loads(back.stdout)["jobs"] == [
        {
            "name": name,
            "action": "unchanged",
            "source": "stdin",
            "changed": [],
            "diff": [],
            "written": False,
            "error": None,
        }
    ]

    wide = cli("jobs", "list", "--search", name, "-o", "wide", server=server)
    header, row = wide.stdout.splitlines()
    assert header.split()[-7:] == [
        "TIMEZONE",
        "EXECUTOR",
        "PARENT_JOB",
        "LAST_SUCCESS",
        "LAST_ERROR",
        "TAGS",
        "METADATA",
    ]
    assert row.split()[-2:] == ["shell", "team=ops"]
    assert yaml.safe_load(cli("members", "-o", "yaml", server=server).stdout)[0]["Name"] == server.name
    assert cli_json("executions", "list", name, server=server) == []
    both = cli("jobs", "get", name, "--json", "-o", "yaml", server=server)
    assert both.returncode == 2
    assert "--json means -o json" in both.stderr


def test_apply_a_directory_then_prune_what_left_it_by_selector(server: Node, tmp_path: Path) -> None:
    batch = unique("batch")
    kept, dropped, stranger = unique("kept"), unique("dropped"), unique("stranger")
    jobs_dir = tmp_path / "jobs"
    jobs_dir.mkdir()
    (jobs_dir / "a.yaml").write_text(
        f"- {{name: {kept}, schedule: '@manually', metadata: {{batch: {batch}}}}}\n"
        f"- {{name: {dropped}, schedule: '@manually', metadata: {{batch: {batch}}}}}\n"
    )
    (jobs_dir / "notes.txt").write_text("not a job file")
    assert server.post("/v1/jobs", json=job(stranger, metadata={"batch": "other"})).status_code == 201

    created = cli("jobs", "apply", "-f", str(jobs_dir), server=server)
    assert created.returncode == 0, created.stderr
    rows = [row.split() for row in created.stdout.splitlines()[1:]]
    assert rows == [
        [kept, str(jobs_dir / "a.yaml"), "created"],
        [dropped, str(jobs_dir / "a.yaml"), "created"],
    ]

    (jobs_dir / "a.yaml").write_text(
        f"- {{name: {kept}, schedule: '@manually', metadata: {{batch: {batch}}}}}\n"
    )
    unselected = cli("jobs", "apply", "-f", str(jobs_dir), "--prune", server=server)
    assert unselected.returncode == 2
    assert "--prune needs --selector" in unselected.stderr

    planned = cli_json(
        "jobs",
        "apply",
        "-f",
        str(jobs_dir),
        "--prune",
        "--selector",
        f"batch={batch}",
        "--dry-run",
        server=server,
    )
    assert [(j["name"], j["action"], j["written"]) for j in planned["jobs"]] == [
        (kept, "unchanged", False),
        (dropped, "prune", False),
    ]
    assert server.get(f"/v1/jobs/{dropped}").status_code == 200

    pruned = cli("jobs", "apply", "-f", str(jobs_dir), "--prune", "-l", f"batch={batch}", server=server)
    assert pruned.returncode == 0, pruned.stderr
    assert [dropped, "pruned"] in [row.split() for row in pruned.stdout.splitlines()]
    assert server.get(f"/v1/jobs/{dropped}").status_code == 404
    assert server.get(f"/v1/jobs/{kept}").status_code == 200
    assert server.get(f"/v1/jobs/{stranger}").status_code == 200  # other metadata: never pruned
