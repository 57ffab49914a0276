"""The CLI commands that manage a running cluster through its API: jobs, executions, members, leader,
pause/unpause and import (from a Dkron backup file or a running Dkron).

Every command takes `--server URL` and `--token` (env DKRON_NATS_API_URL, DKRON_NATS_TOKEN), prints a
table for people or JSON with `--json`, and exits with the codes documented in `dkron_nats.apiclient`.
`jobs apply` and `import` share one engine, `dkron_nats.jobsync`: read jobs, drop the read-only fields, order
parents before children, and write only the jobs whose given fields differ from what the server stores.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from dkron_nats.apiclient import (
    REFUSED,
    Api,
    ApiError,
    api_options,
    cell_text,
    json_option,
    print_json,
    print_table,
)
from dkron_nats.config import ENV_PREFIX
from dkron_nats.jobsync import Outcome, checked_jobs, job_path, load_job_file, sync_jobs
from dkron_nats.timefmt import ZERO_TIME

PAGE = 100
"""Jobs fetched per request of `jobs list`."""
FROM_TOKEN_ENV = ENV_PREFIX + "FROM_TOKEN"
JOB_COLUMNS = ("name", "schedule", "status", "disabled", "success_count", "error_count", "next")
EXECUTION_COLUMNS = ("id", "started_at", "finished_at", "status", "node_name", "attempt")
MEMBER_COLUMNS = ("name", "addr", "port", "status", "server", "tags")


def _no_job(name: str) -> str:
    return f"no job named {name!r} (dkron-nats jobs list shows them)"


def _no_execution(job: str, execution_id: str) -> str:
    return f"no execution {execution_id!r} of job {job!r} (dkron-nats executions list {job} shows them)"


# --- jobs ------------------------------------------------------------------------------------------


@click.group()
def jobs() -> None:
    """List, show, apply, delete, run and toggle jobs."""


def _pairs(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    pairs = {}
    for value in values:
        key, sep, item = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{value!r}: use key=value")
        pairs[key] = item
    return pairs


@jobs.command("list")
@click.option("--search", "q", default="", help="Only jobs whose name or display name contains this.")
@click.option("--status", default="", help="Only jobs with this status: success, failed, untriggered...")
@click.option("--tag", multiple=True, callback=_pairs, help="Only jobs targeting tag k=v (repeatable).")
@click.option("--metadata", multiple=True, callback=_pairs, help="Only jobs with metadata k=v (repeatable).")
@click.option(
    "--all", "every", is_flag=True, help="Every matching job, page by page; not only the first page."
)
@click.option(
    "--limit", type=click.IntRange(1, 10_000), default=PAGE, show_default=True, help="Jobs per page."
)
@api_options
@json_option
def jobs_list(
    q: str,
    status: str,
    tag: dict[str, str],
    metadata: dict[str, str],
    every: bool,
    limit: int,
    api: Api,
    as_json: bool,
) -> None:
    """List jobs, filtered on the server and fetched a page at a time."""
    filters: dict[str, str | int] = {"q": q, "status": status}
    filters |= {f"tags[{k}]": v for k, v in tag.items()} | {f"metadata[{k}]": v for k, v in metadata.items()}
    found, total = _list_jobs(api, {k: v for k, v in filters.items() if v}, limit, every)
    if as_json:
        print_json(found)
        return
    print_table([_job_row(job) for job in found], JOB_COLUMNS)
    if len(found) < total:
        click.echo(f"showing {len(found)} of {total} jobs; --all lists every one", err=True)


def _list_jobs(api: Api, filters: dict[str, str | int], limit: int, every: bool) -> tuple[list[Any], int]:
    """The first page, or with `every` all pages; and how many jobs match (X-Total-Count)."""
    found: list[Any] = []
    while True:
        params = {**filters, "_sort": "name", "_start": len(found), "_end": len(found) + limit}
        response = api.response("GET", "/v1/jobs", params=params)
        page = api.decoded(response)
        total = int(response.headers.get("X-Total-Count", len(found) + len(page)))
        found += page
        if not every or not page or len(found) >= total:
            return found, total


def _job_row(job: Mapping[str, Any]) -> dict[str, Any]:
    next_fire = job.get("next")
    return {
        **job,
        "status": job.get("status") or "untriggered",
        "next": "" if next_fire == ZERO_TIME else next_fire,
    }


@jobs.command("get")
@click.argument("name")
@api_options
@json_option
def jobs_get(name: str, api: Api, as_json: bool) -> None:
    """Show one job: every field that is set."""
    job = api.call("GET", job_path(name), missing=_no_job(name))
    if as_json:
        print_json(job)
        return
    shown = {key: value for key, value in job.items() if value not in (None, "", {}, [], ZERO_TIME)}
    width = max(len(key) for key in shown)
    for key, value in shown.items():
        text = json.dumps(value) if isinstance(value, dict | list) else cell_text(value)
        click.echo(f"{key.ljust(width)}  {text}")


@jobs.command("apply")
@click.option(
    "-f",
    "--file",
    "files",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    multiple=True,
    required=True,
    help="YAML or JSON file with one job or a list of jobs (repeatable).",
)
@click.option("--dry-run", is_flag=True, help="Print what would be created or updated; write nothing.")
@api_options
@json_option
def jobs_apply(files: tuple[Path, ...], dry_run: bool, api: Api, as_json: bool) -> None:
    """Create or update the jobs in FILE; a job equal to the stored one is left unchanged (not written)."""
    wanted = [job for path in files for job in checked_jobs(load_job_file(path), str(path), strict=True)]
    _report(sync_jobs(api, wanted, dry_run), dry_run, as_json)


@jobs.command("delete")
@click.argument("name")
@api_options
@json_option
def jobs_delete(name: str, api: Api, as_json: bool) -> None:
    """Delete a job (a job with children cannot be: delete them first)."""
    deleted = api.call("DELETE", job_path(name), missing=_no_job(name))
    click.echo(json.dumps(deleted) if as_json else f"deleted job {name}")


@jobs.command("run")
@click.argument("name")
@click.option("--force", is_flag=True, help="Run even if a `forbid` job's previous launch still runs.")
@api_options
@json_option
def jobs_run(name: str, force: bool, api: Api, as_json: bool) -> None:
    """Launch a job now."""
    params = {"force": "true"} if force else {}
    job = api.call("POST", job_path(name, "run"), params=params, missing=_no_job(name))
    click.echo(json.dumps(job) if as_json else f"started job {name}")


@jobs.command("toggle")
@click.argument("name")
@api_options
@json_option
def jobs_toggle(name: str, api: Api, as_json: bool) -> None:
    """Disable an enabled job, or enable a disabled one."""
    job = api.call("POST", job_path(name, "toggle"), missing=_no_job(name))
    state = "disabled" if job.get("disabled") else "enabled"
    click.echo(json.dumps(job) if as_json else f"job {name} is now {state}")


def _report(outcomes: list[Outcome], dry_run: bool, as_json: bool) -> None:
    """Print the outcomes; exit with the first failure's code, if any."""
    if as_json:
        jobs_out = [{k: v for k, v in asdict(o).items() if k != "exit_code"} for o in outcomes]
        print_json({"dry_run": dry_run, "jobs": jobs_out})
    else:
        rows = [{"job": o.name, "action": _described(o, dry_run), "changed": o.changed} for o in outcomes]
        print_table(rows, ("job", "action", "changed"))
        for outcome in outcomes:
            if outcome.error:
                click.echo(f"error: job {outcome.name}: {outcome.error}", err=True)
        if dry_run:
            click.echo("dry run: nothing was written", err=True)
    failed = [o.exit_code for o in outcomes if o.exit_code]
    if failed:
        raise SystemExit(failed[0])


def _described(outcome: Outcome, dry_run: bool) -> str:
    if outcome.action == "unchanged":
        return "unchanged"
    if outcome.error:
        return f"failed ({outcome.action})"
    if dry_run:
        return f"would {outcome.action}"
    return {"create": "created", "update": "updated"}[outcome.action]


# --- executions ------------------------------------------------------------------------------------


@click.group()
def executions() -> None:
    """List a job's executions, show or follow one's output, cancel a running one."""


@executions.command("list")
@click.argument("job")
@api_options
@json_option
def executions_list(job: str, api: Api, as_json: bool) -> None:
    """A job's executions, newest first."""
    found = api.call("GET", job_path(job, "executions"), missing=_no_job(job))
    if as_json:
        print_json(found)
    else:
        print_table([_execution_row(ex) for ex in found], EXECUTION_COLUMNS)


def _execution_row(execution: Mapping[str, Any]) -> dict[str, Any]:
    finished = execution.get("finished_at")
    running = finished in (None, ZERO_TIME)
    status = execution.get("status") or (
        "running" if running else "success" if execution["success"] else "failed"
    )
    return {**execution, "finished_at": "" if running else finished, "status": status}


@executions.command("output")
@click.argument("job")
@click.argument("execution_id", metavar="ID")
@click.option("--follow", "-f", is_flag=True, help="Stream the output as the job prints it, until it ends.")
@api_options
@json_option
def executions_output(job: str, execution_id: str, follow: bool, api: Api, as_json: bool) -> None:
    """An execution's whole output; with --follow, live until the execution ends."""
    path = job_path(job, "executions", execution_id, "output")
    missing = _no_execution(job, execution_id)
    if follow:
        _follow(api, path, missing, as_json)
        return
    text = api.response("GET", path, missing=missing).text
    if as_json:
        print_json({"job": job, "id": execution_id, "output": text})
    else:
        click.echo(text, nl=False)


def _follow(api: Api, path: str, missing: str, as_json: bool) -> None:
    """Print `output` events as they come; the `end` event carries the finished execution."""
    with api.stream(path, "text/event-stream", missing) as response:
        for kind, data in _sse_events(response.iter_lines()):
            if as_json:
                print_json(
                    {"event": kind, "output": data["output"]}
                    if kind == "output"
                    else {"event": kind, "execution": data}
                )
            elif kind == "output":
                click.echo(data.get("output", ""), nl=False)
            elif kind == "end":
                outcome = "succeeded" if data.get("success") else "failed"
                click.echo(f"execution {data.get('id', '')} {outcome}", err=True)


def _sse_events(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event, JSON data) pairs of a Server-Sent Events stream."""
    kind, data = "message", list[str]()
    for line in lines:
        if not line:
            if data:
                yield kind, json.loads("\n".join(data))
            kind, data = "message", []
        elif line.startswith("event:"):
            kind = line.partition(":")[2].strip()
        elif line.startswith("data:"):
            data.append(line.partition(":")[2].removeprefix(" "))


@executions.command("cancel")
@click.argument("job")
@click.argument("execution_id", metavar="ID")
@api_options
@json_option
def executions_cancel(job: str, execution_id: str, api: Api, as_json: bool) -> None:
    """Stop a running execution (it ends failed); exit 5 when it has already finished."""
    missing = _no_execution(job, execution_id)
    found = api.call("POST", job_path(job, "executions", execution_id, "cancel"), missing=missing)
    click.echo(json.dumps(found) if as_json else f"cancelling execution {execution_id} of job {job}")


# --- cluster ---------------------------------------------------------------------------------------


def _member_row(member: Mapping[str, Any]) -> dict[str, Any]:
    tags = member.get("Tags") or {}
    return {
        "name": member.get("Name"),
        "addr": member.get("Addr"),
        "port": member.get("Port"),
        "status": member.get("statusText", "alive"),
        "server": tags.get("server", ""),
        "tags": {k: v for k, v in tags.items() if k != "server"},
    }


@click.command()
@api_options
@json_option
def members(api: Api, as_json: bool) -> None:
    """The cluster's nodes: servers and agents, alive or failed."""
    found = api.call("GET", "/v1/members")
    if as_json:
        print_json(found)
    else:
        print_table([_member_row(m) for m in found], MEMBER_COLUMNS)


@click.command()
@api_options
@json_option
def leader(api: Api, as_json: bool) -> None:
    """The server that leads (runs the scheduler) now; exit 1 while there is none."""
    found = api.call("GET", "/v1/leader")
    if as_json:
        print_json(found)
    else:
        print_table([_member_row(found)], MEMBER_COLUMNS[:-1])


SCHEDULING_HELP = "Scheduling (persisted, cluster-wide) instead of job submissions (Dkron's pause)."


@click.command()
@click.option("--scheduling", is_flag=True, help=SCHEDULING_HELP)
@api_options
@json_option
def pause(scheduling: bool, api: Api, as_json: bool) -> None:
    """Pause job submissions (new jobs and updates get 503), or with --scheduling the scheduler."""
    _set_paused(api, "/v1/pause", scheduling, as_json)


@click.command()
@click.option("--scheduling", is_flag=True, help=SCHEDULING_HELP)
@api_options
@json_option
def unpause(scheduling: bool, api: Api, as_json: bool) -> None:
    """Lift a pause of submissions, or with --scheduling of the scheduler."""
    _set_paused(api, "/v1/unpause", scheduling, as_json)


def _set_paused(api: Api, path: str, scheduling: bool, as_json: bool) -> None:
    state = api.call("POST", path, params={"scheduling": "true"} if scheduling else {})
    if as_json:
        print_json(state)
        return
    click.echo(f"submissions: {'paused' if state.get('paused') else 'accepted'}")
    if "scheduling_paused" in state:
        click.echo(f"scheduling: {'paused' if state['scheduling_paused'] else 'running'}")


# --- import ----------------------------------------------------------------------------------------


@click.command("import")
@click.argument("backup", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--from-dkron", "source_url", default="", help="Base URL of a running Dkron to copy every job from."
)
@click.option(
    "--from-token", default="", envvar=FROM_TOKEN_ENV, help=f"Token for --from-dkron (env {FROM_TOKEN_ENV})."
)
@click.option("--dry-run", is_flag=True, help="Print what would be created, updated or left; write nothing.")
@api_options
@json_option
def import_jobs(
    backup: Path | None, source_url: str, from_token: str, dry_run: bool, api: Api, as_json: bool
) -> None:
    """Copy jobs from a Dkron backup file (BACKUP, the JSON array /v1/restore takes) or from a running
    Dkron (--from-dkron URL) into the server, parents before children."""
    if (backup is None) == (not source_url):
        raise click.UsageError("give either a backup FILE or --from-dkron URL (one of them)")
    if backup is not None:
        found, source = _read_backup(backup), str(backup)
    else:
        source_api = Api(source_url, from_token, setting="--from-dkron")
        found, source = source_api.call("GET", "/v1/jobs"), source_url
        if not isinstance(found, list):
            raise ApiError(f"{source_url}/v1/jobs did not answer a list of jobs: is it a Dkron API?", REFUSED)
    _report(sync_jobs(api, checked_jobs(found, source, strict=False), dry_run), dry_run, as_json)


def _read_backup(path: Path) -> list[Any]:
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ApiError(f"cannot read the backup {path}: {exc}") from None
    if not isinstance(found, list):
        raise ApiError(f"{path} is not a Dkron backup: that is a JSON array of jobs, as /v1/restore takes")
    return found


API_COMMANDS: list[click.Command] = [jobs, executions, members, leader, pause, unpause, import_jobs]
"""Registered on `dkron-nats` (the `main` group in cli.py)."""
