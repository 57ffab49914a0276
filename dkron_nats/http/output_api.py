"""An execution's whole output, as text or live as Server-Sent Events, from any server.

`GET /v1/jobs/{job}/executions/{execution}/output` answers `text/plain` with what is stored so far (more than
the record's 256,000-byte tail, up to the output stream's limits). With `Accept: text/event-stream` it
streams from the first byte: `output` events whose data is `{"output": "..."}` as the job prints, then one
`end` event with the execution's final record, and closes. A client that falls more than 1 MiB behind gets an
`error` event and is cut off (`http/streams.py`).

The job's secrets are masked in both, even one split across two chunks (agents mask them as the job prints;
this also covers output stored before, or by an older agent).
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
from dkron_nats.http.executions_api import masked_output
from dkron_nats.http.render import execution_json
from dkron_nats.http.responses import TEXT
from dkron_nats.http.services import Services
from dkron_nats.http.streams import BoundedStream
from dkron_nats.kv.output import output_subject, read_output
from dkron_nats.models import Execution
from dkron_nats.secrets import StreamRedactor, job_secrets, redact

AnyRequest = Request[Any, Any, Any]


async def _execution(services: Services, job: str, execution: str) -> tuple[Execution, str, frozenset[str]]:
    """The record, its live output's subject and the job's secrets; 404 for an unknown job or execution."""
    secrets = job_secrets(services.jobs.get(job).spec)
    found = await services.executions.get(job, execution)
    if found is None:
        raise ExecutionNotFoundError(job, execution)
    try:
        return found, output_subject(job, execution), secrets
    except ValueError:  # a leader-made record (missed, skipped) has no live output
        return found, "", secrets


@get("/v1/jobs/{job:str}/executions/{execution:str}/output", middleware=[BoundedStream])
async def execution_output(
    request: AnyRequest, services: Services, job: str, execution: str
) -> Response[bytes] | ServerSentEvent:
    record, subject, secrets = await _execution(services, job, execution)
    if "text/event-stream" in request.headers.get("accept", ""):
        live = _live(services, record, subject, secrets)
        return ServerSentEvent(live, headers={"Cache-Control": "no-cache"})
    text = redact(await _stored(services, record, subject), secrets)
    return Response(text.encode(), media_type=TEXT)  # Litestar adds the charset


async def _stored(services: Services, record: Execution, subject: str) -> str:
    """The stream's copy when it has one (it may be longer than the record's tail), else the record's."""
    if not subject:
        return record.output
    chunks = [c async for c in read_output(services.nc.jetstream(), subject, False, _never)]
    if not chunks:
        return record.output
    return b"".join(chunks).decode("utf-8", errors="replace")


async def _live(
    services: Services, record: Execution, subject: str, secrets: frozenset[str]
) -> AsyncIterator[ServerSentEventMessage]:
    async def finished() -> bool:
        now = await services.executions.get(record.job_name, record.id)
        return now is None or now.finished

    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    redactor = StreamRedactor(secrets)
    streamed = False
    if subject:
        async for chunk in read_output(services.nc.jetstream(), subject, True, finished):
            streamed = True
            text = decoder.decode(redactor.feed(chunk))
            if text:
                yield _event("output", {"output": text})
        if rest := decoder.decode(redactor.flush(), final=True):
            yield _event("output", {"output": rest})
    final = masked_output(await _final(services, record), secrets)
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
