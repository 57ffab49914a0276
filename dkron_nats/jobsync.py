"""Bringing the server's jobs in line with a list of wanted jobs: the engine of `jobs apply` and `import`.

Parents are ordered before children (a cycle is an error), each job is compared with the stored one with
the fields its file leaves out at their defaults (`dkron_nats.jobcompare`), and only the jobs that differ
are written, whole (POST /v1/jobs replaces the stored job), so a second apply of the same file is a no-op
and a key removed from the file goes back to its default. With a selector, `prune_jobs` deletes the jobs
that carry its metadata but are no longer wanted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote

from dkron_nats.apiclient import NOT_FOUND, REFUSED, UNREACHABLE, Api, ApiError
from dkron_nats.errors import DkronError
from dkron_nats.jobcompare import as_stored, changed_fields, differences, stored_or_nothing
from dkron_nats.jobfiles import FileJob

T = TypeVar("T")
PAGE = 100
"""Jobs fetched per request when listing."""


def job_path(name: str, *rest: str) -> str:
    return "/".join([f"/v1/jobs/{quote(name, safe='')}", *(quote(part, safe="") for part in rest)])


def list_jobs(api: Api, filters: Mapping[str, str | int], limit: int, every: bool) -> tuple[list[Any], int]:
    """The first page, or with `every` all pages, sorted by name; and how many jobs match (X-Total-Count)."""
    found: list[Any] = []
    while True:
        params = {**filters, "_sort": "name", "_start": len(found), "_end": len(found) + limit}
        response = api.response("GET", "/v1/jobs", params=params)
        page = api.decoded(response)
        total = int(response.headers.get("X-Total-Count", len(found) + len(page)))
        found += page
        if not every or not page or len(found) >= total:
            return found, total


# --- ordering --------------------------------------------------------------------------------------


def parents_first(items: Sequence[T], job_of: Callable[[T], Mapping[str, Any]]) -> list[T]:
    """The items ordered so every parent (parent_job, depends_on) among them comes before its children."""
    by_name: dict[str, T] = {}
    for item in items:
        name = job_of(item)["name"]
        if name in by_name:
            raise ApiError(f"job {name} is given twice; keep one definition")
        by_name[name] = item
    ordered: list[T] = []
    state: dict[str, str] = {}

    def visit(item: T, path: list[str]) -> None:
        job = job_of(item)
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
        ordered.append(item)

    for item in items:
        visit(item, [])
    return ordered


def _parents_of(job: Mapping[str, Any]) -> list[str]:
    parents = [job["parent_job"]] if isinstance(job.get("parent_job"), str) and job["parent_job"] else []
    dependencies = job.get("depends_on") or []
    return parents + [d["job"] for d in dependencies if isinstance(d, dict) and isinstance(d.get("job"), str)]


# --- applying --------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What apply, import or prune did, or in a dry run would do, to one job."""

    name: str
    action: str
    """create, update, unchanged or prune."""
    source: str = ""
    """The file the job came from (none for a pruned job)."""
    changed: list[str] = field(default_factory=list)
    """The top-level fields that differ from the stored job (an update)."""
    diff: list[dict[str, Any]] = field(default_factory=list)
    """Key by key: {"path", "stored", "wanted"}; what `--dry-run` shows."""
    written: bool = False
    error: str | None = None
    exit_code: int = 0


def sync_jobs(api: Api, wanted: list[FileJob], dry_run: bool) -> list[Outcome]:
    """Create or update each job that differs from the server's, parents first.

    A refused job is reported and the rest still go; an unreachable server stops everything.
    """
    outcomes = []
    for item in parents_first(wanted, lambda item: item.job):
        outcome = _plan(api, item)
        if outcome.action != "unchanged" and not dry_run:
            _send(api, outcome, "POST", "/v1/jobs", item.job)
        outcomes.append(outcome)
    return outcomes


def _plan(api: Api, item: FileJob) -> Outcome:
    name = item.job["name"]
    stored = _stored(api, name)
    action = "create" if stored is None else "update"
    try:
        wanted = as_stored(item.job)
    except DkronError as refused:  # the server will say so when it is sent; a dry run says it now
        return Outcome(name, action, item.source, error=str(refused), exit_code=REFUSED)
    if stored is None:
        return Outcome(name, action, item.source)
    found = differences(stored_or_nothing(stored), wanted)
    if not found:
        return Outcome(name, "unchanged", item.source)
    diff = [d.as_json() for d in found]
    return Outcome(name, action, item.source, changed=changed_fields(found), diff=diff)


def _stored(api: Api, name: str) -> Any:
    """The job as the server answers it, or None when there is none."""
    try:
        return api.call("GET", job_path(name))
    except ApiError as error:
        if error.exit_code != NOT_FOUND:
            raise
        return None


def _send(api: Api, outcome: Outcome, method: str, path: str, body: Any = None) -> None:
    """Write (or delete) one job; a refusal is recorded on the outcome, an unreachable server raises."""
    try:
        api.call(method, path, body)
    except ApiError as error:
        if error.exit_code == UNREACHABLE:
            raise
        outcome.error, outcome.exit_code = error.message, error.exit_code
        return
    outcome.error, outcome.exit_code, outcome.written = None, 0, True


# --- pruning ---------------------------------------------------------------------------------------


def prune_jobs(api: Api, keep: set[str], selector: Mapping[str, str], dry_run: bool) -> list[Outcome]:
    """Delete the jobs with all of the selector's metadata whose names are not in `keep`, children first."""
    filters = {f"metadata[{key}]": value for key, value in selector.items()}
    found, _ = list_jobs(api, filters, PAGE, every=True)
    # Checked here too: pruning deletes, so a server that ignored the filter must not widen it.
    selected = [job for job in found if _has_metadata(job, selector) and job["name"] not in keep]
    outcomes = []
    for job in reversed(parents_first(selected, lambda job: job)):
        outcome = Outcome(job["name"], "prune")
        if not dry_run:
            _send(api, outcome, "DELETE", job_path(job["name"]))
        outcomes.append(outcome)
    return outcomes


def _has_metadata(job: Mapping[str, Any], selector: Mapping[str, str]) -> bool:
    metadata = job.get("metadata") or {}
    return all(metadata.get(key) == value for key, value in selector.items())


def missing_selector(wanted: list[FileJob], selector: Mapping[str, str]) -> list[FileJob]:
    """The wanted jobs a prune with this selector would never consider (they lack its metadata)."""
    return [item for item in wanted if not _has_metadata(item.job, selector)]
