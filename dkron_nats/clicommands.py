"""The CLI commands that manage a running cluster through its API: jobs, executions, members, leader,
pause/unpause and import (from a Dkron backup file or a running Dkron).

Every command takes `--server URL` and `--token` (env DKRON_NATS_API_URL, DKRON_NATS_TOKEN), prints a
table for people or JSON with `--json`, and exits with the codes documented in `dkron_nats.apiclient`.
`jobs apply` and `import` share one engine: read jobs, drop the read-only fields, order parents before
children, and write only the jobs whose given fields differ from what the server stores.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click
import yaml

from dkron_nats.apiclient import (
    NOT_FOUND,
    REFUSED,
    UNREACHABLE,
    Api,
    ApiError,
    api_options,
    cell_text,
    json_option,
    print_json,
    print_table,
)
from dkron_nats.config import ENV_PREFIX
from dkron_nats.jobinput import JobInput
from dkron_nats.timefmt import ZERO_TIME, parse_time

PAGE = 100
"""Jobs fetched per request of `jobs list`."""
READ_ONLY_FIELDS = (
    "id",
    "success_count",
    "error_count",
    "last_success",
    "last_error",
    "status",
    "next",
    "dependent_jobs",
    "depended_on_by",
)
"""Computed by the server: never written by apply or import, never compared."""
JOB_FIELDS = frozenset(JobInput.__struct_fields__)
SERVER_DEFAULTED = frozenset(
    {"concurrency", "misfire_policy", "misfire_max", "notify_on", "dst_policy", "retry_backoff"}
)
"""Fields where null means "the server's default", which the stored job then shows."""
TIME_FIELDS = frozenset({"starts_at", "expires_at"})
STRUCT_FIELDS = frozenset({"dst_policy", "retry_backoff", "depends_on"})
"""Fields holding objects whose unset keys the server fills in: only the keys given are compared."""
FROM_TOKEN_ENV = ENV_PREFIX + "FROM_TOKEN"
JOB_COLUMNS = ("name", "schedule", "status", "disabled", "success_count", "error_count", "next")
EXECUTION_COLUMNS = ("id", "started_at", "finished_at", "status", "node_name", "attempt")
MEMBER_COLUMNS = ("name", "addr", "port", "status", "server", "tags")


def _job_path(name: str, *rest: str) -> str:
    return "/".join([f"/v1/jobs/{quote(name, safe='')}", *(quote(part, safe="") for part in rest)])


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
    job = api.call("GET", _job_path(name), missing=_no_job(name))
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
    wanted = [job for path in files for job in _checked_jobs(load_job_file(path), str(path), strict=True)]
    _report(sync_jobs(api, wanted, dry_run), dry_run, as_json)


@jobs.command("delete")
@click.argument("name")
@api_options
@json_option
def jobs_delete(name: str, api: Api, as_json: bool) -> None:
    """Delete a job (a job with children cannot be: delete them first)."""
    deleted = api.call("DELETE", _job_path(name), missing=_no_job(name))
    click.echo(json.dumps(deleted) if as_json else f"deleted job {name}")


@jobs.command("run")
@click.argument("name")
@click.option("--force", is_flag=True, help="Run even if a `forbid` job's previous launch still runs.")
@api_options
@json_option
def jobs_run(name: str, force: bool, api: Api, as_json: bool) -> None:
    """Launch a job now."""
    params = {"force": "true"} if force else {}
    job = api.call("POST", _job_path(name, "run"), params=params, missing=_no_job(name))
    click.echo(json.dumps(job) if as_json else f"started job {name}")


@jobs.command("toggle")
@click.argument("name")
@api_options
@json_option
def jobs_toggle(name: str, api: Api, as_json: bool) -> None:
    """Disable an enabled job, or enable a disabled one."""
    job = api.call("POST", _job_path(name, "toggle"), missing=_no_job(name))
    state = "disabled" if job.get("disabled") else "enabled"
    click.echo(json.dumps(job) if as_json else f"job {name} is now {state}")


# --- reading job files -----------------------------------------------------------------------------


class _JobLoader(yaml.SafeLoader):
    """YAML where only true/false are booleans and times stay text: `on: success` (in depends_on) keeps
    its key, and `starts_at` is sent as written."""


_BOOL = "tag:yaml.org,2002:bool"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_JobLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag not in (_BOOL, _TIMESTAMP)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_JobLoader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def load_job_file(path: Path) -> list[Any]:
    """The jobs in a YAML or JSON file: one job, a list, or (YAML) several documents of either."""
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".json":
            documents = [json.loads(text)]
        else:
            documents = list(yaml.load_all(text, Loader=_JobLoader))
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
        raise ApiError(f"cannot read {path}: {exc}") from None
    found: list[Any] = []
    for document in documents:
        if document is not None:
            found += document if isinstance(document, list) else [document]
    return found


def _checked_jobs(found: Sequence[Any], source: str, *, strict: bool) -> list[dict[str, Any]]:
    """Jobs as objects with a name, without read-only fields; unknown fields are refused (`strict`,
    a typo in a file) or dropped with a note (another Dkron version's extra fields)."""
    checked: list[dict[str, Any]] = []
    for index, job in enumerate(found):
        if not isinstance(job, dict) or not isinstance(job.get("name"), str) or not job["name"]:
            raise ApiError(f'{source}: job #{index + 1} is not an object with a "name"; fix the file')
        unknown = sorted(str(key) for key in job if key not in JOB_FIELDS and key not in READ_ONLY_FIELDS)
        if unknown and strict:
            raise ApiError(
                f"{source}: job {job['name']} has unknown field(s) {', '.join(unknown)}; "
                "`dkron-nats jobs get NAME --json` shows the fields a job has"
            )
        if unknown:
            click.echo(f"note: job {job['name']}: ignoring field(s) {', '.join(unknown)}", err=True)
        checked.append({k: v for k, v in job.items() if k in JOB_FIELDS and k not in READ_ONLY_FIELDS})
    return checked


def parents_first(wanted: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The jobs ordered so every parent (parent_job, depends_on) in the batch comes before its children."""
    by_name: dict[str, dict[str, Any]] = {}
    for job in wanted:
        if job["name"] in by_name:
            raise ApiError(f"job {job['name']} is given twice; keep one definition")
        by_name[job["name"]] = job
    ordered: list[dict[str, Any]] = []
    state: dict[str, str] = {}

    def visit(job: dict[str, Any], path: list[str]) -> None:
        name = job["name"]
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            raise ApiError(f"jobs depend on each other in a cycle: {' -> '.join([*path, name])}")
        state[name] = "visiting"
        for parent in _parents_of(job):
            if parent in by_name:
                visit(by_name[parent], [*path, name])
        state[name] = "done"
        ordered.append(job)

    for job in wanted:
        visit(job, [])
    return ordered


def _parents_of(job: Mapping[str, Any]) -> list[str]:
    parents = [job["parent_job"]] if isinstance(job.get("parent_job"), str) and job["parent_job"] else []
    dependencies = job.get("depends_on") or []
    return parents + [d["job"] for d in dependencies if isinstance(d, dict) and isinstance(d.get("job"), str)]


# --- comparing with the stored job -----------------------------------------------------------------


def changed_fields(wanted: Mapping[str, Any], stored: Mapping[str, Any]) -> list[str]:
    """The fields the file gives whose value differs from the stored job's, as the API shows it."""
    return [key for key, value in wanted.items() if not _same(key, value, stored.get(key))]


def _same(key: str, wanted: Any, stored: Any) -> bool:
    if wanted is None and key in SERVER_DEFAULTED:
        return True
    if key in TIME_FIELDS:
        return _same_time(wanted, stored)
    if key == "dst_policy" and isinstance(wanted, dict):
        wanted = {k: v or "default" for k, v in wanted.items()}  # "" and "default" both mean unset
    if key in STRUCT_FIELDS:
        return _given_keys_match(wanted, stored)
    if _empty(wanted) and _empty(stored):
        return True
    return bool(wanted == stored)


def _given_keys_match(wanted: Any, stored: Any) -> bool:
    """Objects match when every key given has the stored value; lists of them item by item."""
    if isinstance(wanted, dict) and isinstance(stored, dict):
        return all(k in stored and _given_keys_match(v, stored[k]) for k, v in wanted.items())
    if isinstance(wanted, list) and isinstance(stored, list):
        pairs = zip(wanted, stored, strict=False)
        return len(wanted) == len(stored) and all(_given_keys_match(w, s) for w, s in pairs)
    if isinstance(wanted, dict) and not wanted and stored is None:
        return True
    return bool(wanted == stored) or (_empty(wanted) and _empty(stored))


def _same_time(wanted: Any, stored: Any) -> bool:
    try:
        wanted_at = parse_time(wanted) if isinstance(wanted, str) else wanted
        stored_at = parse_time(stored) if isinstance(stored, str) else stored
    except ValueError:
        return False  # the server will say what is wrong with it
    return bool(wanted_at == stored_at)


def _empty(value: Any) -> bool:
    """null, "", false, 0 and empty maps or lists: what the server stores for an unset field."""
    return value is None or value in ("", {}, [], False, 0)


# --- writing ---------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What apply or import did, or in a dry run would do, to one job."""

    name: str
    action: str
    """create, update or unchanged."""
    changed: list[str] = field(default_factory=list)
    """The fields that differ from the stored job (an update)."""
    written: bool = False
    error: str | None = None
    exit_code: int = 0


def sync_jobs(api: Api, wanted: list[dict[str, Any]], dry_run: bool) -> list[Outcome]:
    """Create or update each job whose given fields differ from the server's, parents first.

    A refused job is reported and the rest still go; an unreachable server stops everything.
    """
    outcomes = []
    for job in parents_first(wanted):
        outcome = _plan(api, job)
        if outcome.action != "unchanged" and not dry_run:
            _write(api, job, outcome)
        outcomes.append(outcome)
    return outcomes


def _plan(api: Api, job: Mapping[str, Any]) -> Outcome:
    name = job["name"]
    try:
        stored = api.call("GET", _job_path(name))
    except ApiError as error:
        if error.exit_code != NOT_FOUND:
            raise
        return Outcome(name, "create")
    changed = changed_fields(job, stored)
    return Outcome(name, "update" if changed else "unchanged", changed=changed)


def _write(api: Api, job: Mapping[str, Any], outcome: Outcome) -> None:
    try:
        api.call("POST", "/v1/jobs", dict(job))
    except ApiError as error:
        if error.exit_code == UNREACHABLE:
            raise
        outcome.error, outcome.exit_code = error.message, error.exit_code
        return
    outcome.written = True


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
    found = api.call("GET", _job_path(job, "executions"), missing=_no_job(job))
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
    path = _job_path(job, "executions", execution_id, "output")
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
    found = api.call("POST", _job_path(job, "executions", execution_id, "cancel"), missing=missing)
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
    _report(sync_jobs(api, _checked_jobs(found, source, strict=False), dry_run), dry_run, as_json)


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
