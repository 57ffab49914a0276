"""Bringing the server's jobs in line with a list of wanted jobs: the engine of `jobs apply` and `import`.

Jobs are read from YAML or JSON, the read-only fields the server computes are dropped, parents are ordered
before children (a cycle is an error), and only the jobs whose given fields differ from what the server
stores are written. Comparing only the given fields keeps a second apply of the same file a no-op.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click
import yaml

from dkron_nats.apiclient import NOT_FOUND, UNREACHABLE, Api, ApiError
from dkron_nats.jobinput import JobInput
from dkron_nats.timefmt import parse_time

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


def job_path(name: str, *rest: str) -> str:
    return "/".join([f"/v1/jobs/{quote(name, safe='')}", *(quote(part, safe="") for part in rest)])


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


def checked_jobs(found: Sequence[Any], source: str, *, strict: bool) -> list[dict[str, Any]]:
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
        stored = api.call("GET", job_path(name))
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
