"""/v1/jobs/{job}/executions: history of a job, one execution, and clearing the history.

Outputs are shown with the job's secrets masked: agents mask them as the job prints, and this masks them
again for records kept from before, or made by an older agent.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
from litestar import Request, Response, delete, get, post

from dkron_nats import audit
from dkron_nats.errors import ConflictError, ExecutionNotFoundError
from dkron_nats.http.auth_api import OPERATOR, principal_of
from dkron_nats.http.render import execution_json, job_json
from dkron_nats.http.responses import json_response, list_response
from dkron_nats.http.services import Services
from dkron_nats.models import CancelLaunch, Execution, JobState, encode
from dkron_nats.names import job_key
from dkron_nats.secrets import job_secrets, redact
from dkron_nats.subjects import AGENT_CANCEL

AnyRequest = Request[Any, Any, Any]
SORT_FIELDS = {
    "id": "started_at",
    "started_at": "started_at",
    "finished_at": "finished_at",
    "attempt": "attempt",
}


def masked_output(execution: Execution, secrets: Iterable[str]) -> Execution:
    """The execution with the job's secrets cut out of its output."""
    output = redact(execution.output, secrets)
    return execution if output == execution.output else msgspec.structs.replace(execution, output=output)


def _sort_key(field: str) -> Any:
    def key(ex: Execution) -> Any:
        value = getattr(ex, field)
        return value.isoformat() if hasattr(value, "isoformat") else (value or "")

    return key


@get("/v1/jobs/{job:str}/executions")
async def list_executions(request: AnyRequest, services: Services, job: str) -> Response[bytes]:
    spec = services.jobs.get(job).spec
    # The store may hold a few more than the limit between two trims (they are batched): show the limit.
    executions = await services.executions.history(job, newest=spec.history_limit or services.max_executions)
    params = request.query_params
    sort = params.get("_sort") or ""
    if sort:
        field = SORT_FIELDS.get(sort)
        if field is None:
            return list_response(request, [], 0)  # Dkron answers an unknown index with an empty list
        executions.sort(key=_sort_key(field))
    if params.get("_order", "DESC") == "DESC":
        executions.reverse()
    limit_text = params.get("output_size_limit")
    limit = int(limit_text) if limit_text and limit_text.isdigit() else None
    tz = ZoneInfo(spec.timezone) if spec.timezone not in ("", "Local") else None
    secrets = job_secrets(spec)
    items = [execution_json(masked_output(ex, secrets), tz, limit, list_view=True) for ex in executions]
    return list_response(request, items, len(items))


@delete("/v1/jobs/{job:str}/executions", status_code=200)
async def delete_executions(request: AnyRequest, services: Services, job: str) -> Response[bytes]:
    view = services.jobs.get(job)
    before = job_json(view, services.nexts.get(view.spec))
    await services.executions.purge_job(job)
    state = await services.jobs.update_state(
        job_key(job),
        lambda st: JobState(status=st.status, applied_seq=st.applied_seq),
    )
    view = services.jobs.view(view.spec)
    after = job_json(view, services.nexts.get(view.spec)) | {"status": state.status}
    await services.audit.record(principal_of(request), audit.EXECUTIONS_DELETE, job, before, after)
    return json_response(request, after)


@get("/v1/jobs/{job:str}/executions/{execution:str}")
async def get_execution(request: AnyRequest, services: Services, job: str, execution: str) -> Response[bytes]:
    spec = services.jobs.get(job).spec
    found = await services.executions.get(job, execution)
    if found is None:
        raise ExecutionNotFoundError(job, execution)
    return json_response(request, execution_json(masked_output(found, job_secrets(spec))))


@post("/v1/jobs/{job:str}/executions/{execution:str}/cancel", status_code=202, opt=OPERATOR)
async def cancel_execution(
    request: AnyRequest, services: Services, job: str, execution: str
) -> Response[bytes]:
    """Stop a running execution on whichever agent runs it (its whole process group); it ends failed."""
    spec = services.jobs.get(job).spec
    found = await services.executions.get(job, execution)
    if found is None:
        raise ExecutionNotFoundError(job, execution)
    if found.finished:
        raise ConflictError(f"execution {execution} of job {job} has already finished ({found.status})")
    cancel = CancelLaunch(
        job=job, group=found.group, execution=found.id, reason="cancelled: by a request to the API"
    )
    await services.nc.publish(AGENT_CANCEL, encode(cancel))
    await services.audit.record(principal_of(request), audit.EXECUTION_CANCEL, f"{job}/{execution}")
    return json_response(request, execution_json(masked_output(found, job_secrets(spec))), status=202)


ROUTES = [list_executions, delete_executions, get_execution, cancel_execution]
