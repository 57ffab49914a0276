"""An execution's whole output, as text or live as Server-Sent Events, from any server.

`GET /v1/jobs/{job}/executions/{execution}/output` answers `text/plain` with what is stored so far (more than
the record's 256,000-byte tail, up to the output stream's limits). With `Accept: text/event-stream` it
streams from the first byte: `output` events whose data is `{"output": "..."}` as the job prints, then one
`end` event with the execution's final record, and closes.
"""

from __future__ import annotations

import codecs
from collections.abc import AsyncIterator
from typing import Any

import anyio
import msgspec
from litestar import Request, Response, get
from litestar.response import ServerSentEvent, ServerSentEventMessage

from dkron_nats.errors import ExecutionNotFoundError
from dkron_nats.http.render import execution_json
from dkron_nats.http.services import Services
from dkron_nats.kv.output import output_subject, read_output
from dkron_nats.models import Execution

AnyRequest = Request[Any, Any, Any]


async def _execution(services: Services, job: str, execution: str) -> tuple[Execution, str]:
    services.jobs.get(job)  # 404 for an unknown job
    found = await services.executions.get(job, execution)
    if found is None:
        raise ExecutionNotFoundError(job, execution)
    try:
        return found, output_subject(job, execution)
    except ValueError:  # a leader-made record (missed, skipped) has no live output
        return found, ""


@get("/v1/jobs/{job:str}/executions/{execution:str}/output")
async def execution_output(
    request: AnyRequest, services: Services, job: str, execution: str
) -> Response[bytes] | ServerSentEvent:
    record, subject = await _execution(services, job, execution)
    if "text/event-stream" in request.headers.get("accept", ""):
        return ServerSentEvent(_live(services, record, subject), headers={"Cache-Control": "no-cache"})
    text = await _stored(services, record, subject)
    return Response(text.encode(), media_type="text/plain; charset=utf-8")


async def _stored(services: Services, record: Execution, subject: str) -> str:
    """The stream's copy when it has one (it may be longer than the record's tail), else the record's."""
    if not subject:
        return record.output
    chunks = [c async for c in read_output(services.nc.jetstream(), subject, False, _never)]
    if not chunks:
        return record.output
    return b"".join(chunks).decode("utf-8", errors="replace")


async def _live(services: Services, record: Execution, subject: str) -> AsyncIterator[ServerSentEventMessage]:
    async def finished() -> bool:
        now = await services.executions.get(record.job_name, record.id)
        return now is None or now.finished

    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    streamed = False
    if subject:
        async for chunk in read_output(services.nc.jetstream(), subject, True, finished):
            streamed = True
            text = decoder.decode(chunk)
            if text:
                yield _event("output", {"output": text})
        if rest := decoder.decode(b"", final=True):
            yield _event("output", {"output": rest})
    final = await _final(services, record)
    if not streamed and final.output:  # nothing live (aged out, or recorded by the leader): the record's
        yield _event("output", {"output": final.output})
    yield _event("end", execution_json(final))


async def _final(services: Services, record: Execution, wait: float = 5.0) -> Execution:
    """The finished record: the agent marks the end of its output after publishing the result, which the
    leader stores a moment later."""
    with anyio.move_on_after(wait):
        while True:
            now = await services.executions.get(record.job_name, record.id)
            if now is None or now.finished:
                return now or record
            await anyio.sleep(0.05)
    return await services.executions.get(record.job_name, record.id) or record


async def _never() -> bool:
    return False


def _event(kind: str, data: dict[str, Any]) -> ServerSentEventMessage:
    return ServerSentEventMessage(data=msgspec.json.encode(data).decode(), event=kind)


ROUTES = [execution_output]
