"""The CLI commands that manage a running cluster's jobs and executions through its API.

Every command takes `--server URL` and `--token` (env DKRON_NATS_API_URL, DKRON_NATS_TOKEN), prints a
table for people or `-o json|yaml` for scripts (`--json` is `-o json`), and exits with the codes documented
in `dkron_nats.apiclient`. `jobs apply` and `import` share one engine, `dkron_nats.jobsync`. The cluster's
commands (members, leader, pause, completion) are in `dkron_nats.clicluster`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from dkron_nats.apiclient import JOB_FAILED, REFUSED, Api, ApiError, api_options, cell_text, print_table
from dkron_nats.clicluster import CLUSTER_COMMANDS
from dkron_nats.clifollow import follow_launch, follow_output, no_execution
from dkron_nats.config import ENV_PREFIX
from dkron_nats.jobcompare import diff_line
from dkron_nats.jobfiles import FileJob, checked_jobs, read_backup, read_sources
from dkron_nats.jobsync import PAGE, Outcome, job_path, list_jobs, missing_selector, prune_jobs, sync_jobs
from dkron_nats.output_formats import WIDE, is_structured, output_option, print_structured, show
from dkron_nats.timefmt import ZERO_TIME

FROM_TOKEN_ENV = ENV_PREFIX + "FROM_TOKEN"
EXECUTION_IDS_HEADER = "X-Execution-Ids"
"""Where a run's answer names the executions it started (the body is the job, as in Dkron)."""
JOB_COLUMNS = ("name", "schedule", "status", "disabled", "success_count", "error_count", "next")
JOB_WIDE_COLUMNS = (
    *JOB_COLUMNS,
    "timezone",
    "executor",
    "parent_job",
    "last_success",
    "last_error",
    "tags",
    "metadata",
)
EXECUTION_COLUMNS = ("id", "started_at", "finished_at", "status", "node_name", "attempt")
EXECUTION_WIDE_COLUMNS = (*EXECUTION_COLUMNS, "group", "scheduled_at", "output_truncated")


def _no_job(name: str) -> str:
    return f"no job named {name!r} (dkron-nats jobs list shows them)"


def _pairs(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    """`k=v` options (repeatable, or comma-separated in one: `team=ops,tier=1`) as a map."""
    pairs = {}
    for value in (part for given in values for part in given.split(",") if part):
        key, sep, item = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{value!r}: use key=value")
        pairs[key] = item
    return pairs


# --- jobs ------------------------------------------------------------------------------------------


@click.group()
def jobs() -> None:
    """List, show, apply, delete, run and toggle jobs."""


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
@output_option
def jobs_list(
    q: str,
    status: str,
    tag: dict[str, str],
    metadata: dict[str, str],
    every: bool,
    limit: int,
    api: Api,
    output: str,
) -> None:
    """List jobs, filtered on the server and fetched a page at a time."""
    filters: dict[str, str | int] = {"q": q, "status": status}
    filters |= {f"tags[{k}]": v for k, v in tag.items()} | {f"metadata[{k}]": v for k, v in metadata.items()}
    found, total = list_jobs(api, {k: v for k, v in filters.items() if v}, limit, every)
    show(output, found, [_job_row(job) for job in found], JOB_COLUMNS, JOB_WIDE_COLUMNS)
    if len(found) < total and not is_structured(output):
        click.echo(f"showing {len(found)} of {total} jobs; --all lists every one", err=True)


def _job_row(job: Mapping[str, Any]) -> dict[str, Any]:
    return {
        **job,
        "status": job.get("status") or "untriggered",
        "next": _time_cell(job.get("next")),
        "last_success": _time_cell(job.get("last_success")),
        "last_error": _time_cell(job.get("last_error")),
    }


def _time_cell(value: Any) -> Any:
    return "" if value == ZERO_TIME else value


@jobs.command("get")
@click.argument("name")
@api_options
@output_option
def jobs_get(name: str, api: Api, output: str) -> None:
    """Show one job: every field that is set (wide: every field). `-o yaml` is a file `jobs apply` takes."""
    job = api.call("GET", job_path(name), missing=_no_job(name))
    if is_structured(output):
        print_structured(job, output)
        return
    unset: tuple[Any, ...] = (None, "", {}, [], ZERO_TIME)
    shown = {key: value for key, value in job.items() if output == WIDE or value not in unset}
    width = max(len(key) for key in shown)
    for key, value in shown.items():
        text = json.dumps(value) if isinstance(value, dict | list) else cell_text(value)
        click.echo(f"{key.ljust(width)}  {text}")


@jobs.command("apply")
@click.option(
    "-f",
    "--file",
    "files",
    type=click.Path(exists=True, allow_dash=True),
    multiple=True,
    required=True,
    help="A YAML or JSON file of jobs, a directory (its *.json, *.yaml and *.yml), or - for stdin "
    "(repeatable).",
)
@click.option(
    "--prune",
    is_flag=True,
    help="Delete the jobs that carry the --selector metadata and are in none of the files.",
)
@click.option(
    "--selector",
    "-l",
    multiple=True,
    callback=_pairs,
    help="Metadata k=v (repeatable, or k=v,k2=v2) of the jobs --prune may delete.",
)
@click.option("--dry-run", is_flag=True, help="Show what would change, key by key; write nothing.")
@api_options
@output_option
def jobs_apply(
    files: tuple[str, ...], prune: bool, selector: dict[str, str], dry_run: bool, api: Api, output: str
) -> None:
    """Make the server's jobs what the files say: create, update (a key left out of a file goes back to its
    default), leave equal jobs unchanged (not written), and with --prune delete the selected jobs that are
    no longer in the files."""
    if prune and not selector:
        raise click.UsageError("--prune needs --selector k=v: only jobs with that metadata are pruned")
    wanted = read_sources(files)
    outcomes = sync_jobs(api, wanted, dry_run)
    if prune:
        for item in missing_selector(wanted, selector):
            click.echo(
                f"note: job {item.job['name']} ({item.source}) lacks the selector's metadata: "
                "--prune never deletes it",
                err=True,
            )
        outcomes += prune_jobs(api, {item.job["name"] for item in wanted}, selector, dry_run)
    report(outcomes, dry_run, output)


@jobs.command("delete")
@click.argument("name")
@api_options
@output_option
def jobs_delete(name: str, api: Api, output: str) -> None:
    """Delete a job (a job with children cannot be: delete them first)."""
    deleted = api.call("DELETE", job_path(name), missing=_no_job(name))
    _said(output, deleted, f"deleted job {name}")


@jobs.command("run")
@click.argument("name")
@click.option("--force", is_flag=True, help="Run even if a `forbid` job's previous launch still runs.")
@click.option(
    "--follow",
    is_flag=True,
    help="Stream the output live until the launch ends (through its retries); exit 0 if it succeeded, "
    f"{JOB_FAILED} if it failed.",
)
@api_options
@output_option
def jobs_run(name: str, force: bool, follow: bool, api: Api, output: str) -> None:
    """Launch a job now; prints the id of each execution it started (one per target node)."""
    params = {"force": "true"} if force else {}
    response = api.response("POST", job_path(name, "run"), params=params, missing=_no_job(name))
    job = api.decoded(response)
    ids = [i for i in response.headers.get(EXECUTION_IDS_HEADER, "").split(",") if i]
    if is_structured(output) and not follow:
        print_structured({"job": name, "executions": ids}, output)
    elif not is_structured(output):
        click.echo(f"started job {name}", err=True)
        for execution_id in ids:
            click.echo(execution_id)
    if not follow:
        return
    if not ids:
        raise click.ClickException("the server did not say which executions it started; cannot --follow")
    if not follow_launch(api, job, ids, output):
        raise SystemExit(JOB_FAILED)


@jobs.command("toggle")
@click.argument("name")
@api_options
@output_option
def jobs_toggle(name: str, api: Api, output: str) -> None:
    """Disable an enabled job, or enable a disabled one."""
    job = api.call("POST", job_path(name, "toggle"), missing=_no_job(name))
    _said(output, job, f"job {name} is now {'disabled' if job.get('disabled') else 'enabled'}")


def _said(output: str, data: Any, sentence: str) -> None:
    if is_structured(output):
        print_structured(data, output)
    else:
        click.echo(sentence)


def report(outcomes: list[Outcome], dry_run: bool, output: str, sources: bool = True) -> None:
    """Print what apply, import or prune did (a dry run: the key-level diff too; `sources`: the FILE each
    job came from); exit with the first failure's code, if any."""
    if is_structured(output):
        jobs_out = [{k: v for k, v in asdict(o).items() if k != "exit_code"} for o in outcomes]
        print_structured({"dry_run": dry_run, "jobs": jobs_out}, output)
    else:
        _report_table(outcomes, dry_run, sources)
    failed = [o.exit_code for o in outcomes if o.exit_code]
    if failed:
        raise SystemExit(failed[0])


def _report_table(outcomes: list[Outcome], dry_run: bool, sources: bool) -> None:
    rows = [
        {"job": o.name, "file": o.source, "action": _described(o, dry_run), "changed": o.changed}
        for o in outcomes
    ]
    print_table(rows, ("job", "file", "action", "changed") if sources else ("job", "action", "changed"))
    for outcome in outcomes:
        if dry_run and outcome.diff:
            click.echo(f"job {outcome.name} ({outcome.source}):" if sources else f"job {outcome.name}:")
            for change in outcome.diff:
                click.echo(f"    {diff_line(change)}")
    for outcome in outcomes:
        if outcome.error:
            click.echo(f"error: job {outcome.name}: {outcome.error}", err=True)
    if dry_run:
        click.echo("dry run: nothing was written", err=True)


def _described(outcome: Outcome, dry_run: bool) -> str:
    if outcome.action == "unchanged":
        return "unchanged"
    if outcome.error:
        return f"{'would fail' if dry_run else 'failed'} ({outcome.action})"
    if dry_run:
        return f"would {outcome.action}"
    return {"create": "created", "update": "updated", "prune": "pruned"}[outcome.action]


# --- executions ------------------------------------------------------------------------------------


@click.group()
def executions() -> None:
    """List a job's executions, show or follow one's output, cancel a running one."""


@executions.command("list")
@click.argument("job")
@api_options
@output_option
def executions_list(job: str, api: Api, output: str) -> None:
    """A job's executions, newest first."""
    found = api.call("GET", job_path(job, "executions"), missing=_no_job(job))
    show(output, found, [_execution_row(ex) for ex in found], EXECUTION_COLUMNS, EXECUTION_WIDE_COLUMNS)


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
@output_option
def executions_output(job: str, execution_id: str, follow: bool, api: Api, output: str) -> None:
    """An execution's whole output; with --follow, live until the execution ends."""
    if follow:
        final = follow_output(api, job, execution_id, output)
        if not is_structured(output):
            outcome = "succeeded" if final.get("success") else "failed"
            click.echo(f"execution {final.get('id', execution_id)} {outcome}", err=True)
        return
    path = job_path(job, "executions", execution_id, "output")
    text = api.response("GET", path, missing=no_execution(job, execution_id)).text
    if is_structured(output):
        print_structured({"job": job, "id": execution_id, "output": text}, output)
    else:
        click.echo(text, nl=False)


@executions.command("cancel")
@click.argument("job")
@click.argument("execution_id", metavar="ID")
@api_options
@output_option
def executions_cancel(job: str, execution_id: str, api: Api, output: str) -> None:
    """Stop a running execution (it ends failed); exit 5 when it has already finished."""
    missing = no_execution(job, execution_id)
    found = api.call("POST", job_path(job, "executions", execution_id, "cancel"), missing=missing)
    _said(output, found, f"cancelling execution {execution_id} of job {job}")


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
@output_option
def import_jobs(
    backup: Path | None, source_url: str, from_token: str, dry_run: bool, api: Api, output: str
) -> None:
    """Copy jobs from a Dkron backup file (BACKUP, the JSON array /v1/restore takes) or from a running
    Dkron (--from-dkron URL) into the server, parents before children."""
    if (backup is None) == (not source_url):
        raise click.UsageError("give either a backup FILE or --from-dkron URL (one of them)")
    if backup is not None:
        found, source = read_backup(backup), str(backup)
    else:
        source_api = Api(source_url, from_token, setting="--from-dkron")
        found, source = source_api.call("GET", "/v1/jobs"), source_url
        if not isinstance(found, list):
            raise ApiError(f"{source_url}/v1/jobs did not answer a list of jobs: is it a Dkron API?", REFUSED)
    wanted = [FileJob(job, source) for job in checked_jobs(found, source, strict=False)]
    report(sync_jobs(api, wanted, dry_run), dry_run, output, sources=False)  # one source: the one given


API_COMMANDS: list[click.Command] = [jobs, executions, import_jobs, *CLUSTER_COMMANDS]
"""Registered on `dkron-nats` (the `main` group in cli.py)."""
