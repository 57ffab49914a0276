"""/v1/jobs: create, update, read, list, delete, run, toggle, restore."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

import msgspec
from litestar import Request, Response, delete, get, patch, post, put
from litestar.background_tasks import BackgroundTask

from dkron_nats import audit
from dkron_nats.errors import DkronError, PayloadError, ValidationError
from dkron_nats.http.auth_api import OPERATOR, principal_of
from dkron_nats.http.render import echo_json, fire_json, job_json
from dkron_nats.http.responses import json_response, list_response, text_response
from dkron_nats.http.services import Services
from dkron_nats.jobinput import decode_job, decode_job_list, validate_job
from dkron_nats.joblist import JobQuery
from dkron_nats.jobs import JobView
from dkron_nats.models import DstPolicy, JobSpec
from dkron_nats.names import job_key
from dkron_nats.nextfire import upcoming
from dkron_nats.parameters import masked_env, run_env_error
from dkron_nats.schedule import (
    DST_GAP_POLICIES,
    DST_OVERLAP_POLICIES,
    ScheduleError,
    TimezoneError,
    validate_timezone,
)
from dkron_nats.secrets import mask_job_json
from dkron_nats.timefmt import utcnow

AnyRequest = Request[Any, Any, Any]
logger = logging.getLogger(__name__)


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return 0


def _view_json(services: Services, view: JobView) -> dict[str, Any]:
    return job_json(view, services.nexts.get(view.spec))


async def _save(request: AnyRequest, services: Services) -> Response[bytes]:
    body = await request.body()
    job = validate_job(decode_job(body), services.executors.validate, services.processors.validate)
    before = _stored_json(services, job.name)
    await services.jobs.upsert(job)
    services.nexts.forget(job.name)
    await _audit_saved(request, services, job.name, before)
    location = f"/v1/jobs/{quote(job.name, safe='')}"  # header values are ASCII; names may not be
    response = json_response(request, echo_json(job), status=201, headers={"Location": location})
    if "runoncreate" in request.query_params:  # any value, even empty; like Dkron, after answering
        response.background = BackgroundTask(_run_after_save, services, job.name)
    return response


def _stored_json(services: Services, name: str) -> dict[str, Any] | None:
    """The job as the API shows it now, or None if there is no such job."""
    spec = services.jobs.jobs.get(job_key(name))
    return None if spec is None else _view_json(services, services.jobs.view(spec))


async def _audit_saved(request: AnyRequest, services: Services, name: str, before: Any) -> None:
    action = audit.JOB_CREATE if before is None else audit.JOB_UPDATE
    after = _stored_json(services, name)
    await services.audit.record(principal_of(request), action, name, before, after)


async def _run_after_save(services: Services, name: str) -> None:
    try:
        await services.run_now(name)
    except DkronError as exc:
        logger.warning("runoncreate: job %s did not start: %s", name, exc)


@post("/v1/jobs", status_code=201)
async def create_job(request: AnyRequest, services: Services) -> Response[bytes]:
    return await _save(request, services)


@patch("/v1/jobs", status_code=201)
async def patch_job(request: AnyRequest, services: Services) -> Response[bytes]:
    return await _save(request, services)


@put("/v1/jobs/{job:str}", status_code=201)
async def put_job(request: AnyRequest, services: Services, job: str) -> Response[bytes]:
    return await _save(request, services)  # Dkron uses the body's name, not the path's


@get("/v1/jobs")
async def list_jobs(request: AnyRequest, services: Services) -> Response[bytes]:
    params = request.query_params
    metadata = _bracketed(params, "metadata")
    end = _int(params.get("_end"), 0)
    query = JobQuery(
        q=params.get("q") or "",
        status=params.get("status") or None,  # Dkron: an empty filter is no filter
        disabled=params.get("disabled") or None,
        metadata=metadata,
        tags=_bracketed(params, "tags"),
        sort=params.get("_sort") or "id",
        descending=params.get("_order") == "DESC",
        start=_int(params.get("_start"), 0),
        end=end if end > 0 else None,
    )
    total, page = services.lister.list(query)
    shown = _for_reader(request)
    return list_response(request, [shown(_view_json(services, v)) for v in page], total)


def _bracketed(params: Mapping[str, str], name: str) -> dict[str, str]:
    """`name[key]=value` query parameters as {key: value}."""
    prefix = f"{name}["
    return {k[len(prefix) : -1]: v for k, v in params.items() if k.startswith(prefix) and k.endswith("]")}


@get("/v1/jobs/{job:str}")
async def get_job(request: AnyRequest, services: Services, job: str) -> Response[bytes]:
    return json_response(request, _for_reader(request)(_view_json(services, services.jobs.get(job))))


def _for_reader(request: AnyRequest) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """`read`-role callers see a job's secret config values masked; operators and admins see them."""
    if principal_of(request).role == "read":
        return mask_job_json
    return lambda job: job


NEXT_MAX = 100


@get("/v1/jobs/{job:str}/next")
async def next_fires(request: AnyRequest, services: Services, job: str) -> Response[bytes]:
    """The next `n` fire instants with their UTC offsets.

    With `schedule` (and `timezone`) it previews a schedule that is not saved; the job need not exist.
    """
    params = request.query_params
    count_text = params.get("n", "10")
    if not count_text.isdigit() or not 1 <= int(count_text) <= NEXT_MAX:
        raise ValidationError(f"n must be a whole number from 1 to {NEXT_MAX}, got {count_text!r}")
    if "schedule" in params:
        dst = DstPolicy(gap=params.get("dst_gap", ""), overlap=params.get("dst_overlap", ""))
        if dst.gap not in ("", *DST_GAP_POLICIES) or dst.overlap not in ("", *DST_OVERLAP_POLICIES):
            raise ValidationError(
                'dst_gap must be "run_at_transition" or "skip", and dst_overlap "once" or "twice"'
            )
        spec = JobSpec(
            name=job, schedule=params["schedule"], timezone=params.get("timezone", ""), dst_policy=dst
        )
        if not spec.schedule:
            raise ValidationError("schedule is empty: give a cron expression or a descriptor like @every 5m")
    else:
        spec = services.jobs.get(job).spec
    try:
        zone = validate_timezone(spec.timezone)
        fires = upcoming(spec, utcnow(), int(count_text))
    except (ScheduleError, TimezoneError) as exc:
        raise ValidationError(str(exc)) from None
    return json_response(request, [fire_json(fire, zone) for fire in fires])


@delete("/v1/jobs/{job:str}", status_code=200)
async def delete_job(request: AnyRequest, services: Services, job: str) -> Response[bytes]:
    view = await services.jobs.delete(job)
    await services.executions.purge_job(job)
    before = job_json(view, None)
    await services.audit.record(principal_of(request), audit.JOB_DELETE, job, before=before)
    return json_response(request, before)


EXECUTION_IDS_HEADER = "X-Execution-Ids"
"""A run's answer is the job, as in Dkron; this header names the executions it started (comma-separated)."""


class RunBody(msgspec.Struct, kw_only=True):
    """The optional body of a run: values for the job's parameters (unknown fields are ignored)."""

    env: dict[str, str] | None = None


_run_body = msgspec.json.Decoder(RunBody)
RUN_BODY_EXAMPLE = '{"env": {"DATE": "2024-01-01"}}'


async def _run_env(request: AnyRequest, spec: JobSpec) -> dict[str, str]:
    """The run's `env`, each name a declared parameter of the job: none without a body."""
    body = await request.body()
    if not body.strip():
        return {}
    try:
        env = _run_body.decode(body).env or {}
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
        raise PayloadError(f"{exc}; a run takes no body or JSON like {RUN_BODY_EXAMPLE}") from None
    refused = run_env_error(spec, env)
    if refused is not None:
        raise ValidationError(refused[0], f"env.{refused[1]}")
    return env


async def _run(request: AnyRequest, services: Services, job: str) -> Response[bytes]:
    spec = services.jobs.get(job).spec
    force = request.query_params.get("force", "false").lower()
    if force not in ("true", "false", "1", "0"):
        raise ValidationError(f"force must be true or false, got {force!r}")
    forced = force in ("true", "1")
    env = await _run_env(request, spec)
    launched = await services.run_now(job, force=forced, env=env)
    after: dict[str, Any] = {"force": forced}
    if env:
        after["env"] = masked_env(spec, env)
    await services.audit.record(principal_of(request), audit.JOB_RUN, job, after=after)
    view = services.jobs.get(job)
    location = request.scope["raw_path"].decode("ascii")  # the request's own path, still percent-encoded
    headers = {"Location": location, EXECUTION_IDS_HEADER: ",".join(launched.executions)}
    return json_response(request, _view_json(services, view), headers=headers)


@post("/v1/jobs/{job:str}", status_code=200, opt=OPERATOR)
async def run_job(request: AnyRequest, services: Services, job: str) -> Response[bytes]:
    return await _run(request, services, job)


@post("/v1/jobs/{job:str}/run", status_code=200, opt=OPERATOR)
async def run_job_alias(request: AnyRequest, services: Services, job: str) -> Response[bytes]:
    return await _run(request, services, job)


@post("/v1/jobs/{job:str}/toggle", status_code=200, opt=OPERATOR)
async def toggle_job(request: AnyRequest, services: Services, job: str) -> Response[bytes]:
    before = _stored_json(services, job)
    spec = await services.jobs.toggle(job)
    services.nexts.forget(job)
    after = _view_json(services, services.jobs.view(spec))
    await services.audit.record(principal_of(request), audit.JOB_TOGGLE, job, before, after)
    return json_response(request, after)


@post("/v1/restore", status_code=200)
async def restore(request: AnyRequest, services: Services) -> Response[bytes]:
    form = await request.form()
    upload = form.get("file")
    if upload is None:
        return text_response("missing form field 'file' with a JSON array of jobs", 404)
    data = await upload.read() if hasattr(upload, "read") else str(upload).encode()
    inputs = decode_job_list(data)
    jobs = [validate_job(inp, services.executors.validate, services.processors.validate) for inp in inputs]
    names = {j.name for j in jobs}
    for job in jobs:
        if job.parent_job and job.parent_job not in names and services.jobs.jobs.get(job.parent_job) is None:
            raise ValidationError(f"parent job {job.parent_job} of {job.name} is not in the file nor stored")
    messages = [await _restore_one(request, services, job) for job in _parents_first(jobs)]
    return json_response(request, msgspec.json.encode(messages).decode())


async def _restore_one(request: AnyRequest, services: Services, job: Any) -> str:
    before = _stored_json(services, job.name)
    try:
        await services.jobs.upsert(job, check_pause=False)
    except Exception as exc:  # noqa: BLE001 - each job's outcome is reported, the rest continue
        return f"fail create {job.name}: {exc}"
    services.nexts.forget(job.name)
    await _audit_saved(request, services, job.name, before)
    return f"success create {job.name}"


def _parents_first(jobs: list[Any]) -> list[Any]:
    by_name = {j.name: j for j in jobs}
    ordered: list[Any] = []
    seen: set[str] = set()

    def visit(job: Any, depth: int = 0) -> None:
        if job.name in seen or depth > len(jobs):
            return
        parent = by_name.get(job.parent_job)
        if parent is not None:
            visit(parent, depth + 1)
        seen.add(job.name)
        ordered.append(job)

    for job in jobs:
        visit(job)
    return ordered


ROUTES = [
    create_job,
    patch_job,
    put_job,
    list_jobs,
    get_job,
    next_fires,
    delete_job,
    run_job,
    run_job_alias,
    toggle_job,
    restore,
]
