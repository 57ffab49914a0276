"""Events on `dkron.events.>`, for integrations and the UI's live updates (core NATS: at most once).

- `dkron.events.job.created`, `.updated`, `.deleted`: a job was saved or deleted (on any server); `data` is
  the job as the API shows it, with its executor and processor secrets masked (`null` when deleted), also
  those only found in free text: bearer tokens, URL passwords, secret `name=value` pairs and JSON fields.
- `dkron.events.execution.started`: an agent started an execution; `data` is the execution (API form).
- `dkron.events.execution.finished`: the leader recorded an execution's end, with its status and output (the
  job's secrets masked: the agent masks them as the job prints, see `Running.write`).
- `dkron.events.execution.missed`, `.skipped`: the leader recorded a slot that was not launched; the reason is
  in `output`.

Every body is JSON: `{"type": "job.created", "time": "<RFC 3339>", "job": "<name>", "data": {...}}`.
Servers also use the job events to refresh their caches at once (the KV watch can lag after a NATS node loss).
"""

from __future__ import annotations

from typing import Any

import msgspec

from dkron_nats.names import is_job_key, job_key
from dkron_nats.secrets import mask_job_json
from dkron_nats.timefmt import utcnow

JOB_EVENTS = "dkron.events.job.>"
EXECUTION_EVENTS = "dkron.events.execution.>"
JOB_KINDS = ("created", "updated", "deleted")
EXECUTION_KINDS = ("started", "finished", "missed", "skipped")


class EventBody(msgspec.Struct, kw_only=True):
    type: str
    time: str
    job: str
    data: Any = None


def job_event(kind: str, name: str, job: dict[str, Any] | None) -> tuple[str, bytes]:
    """(subject, body) of a job change; any subscriber may read it, so secrets are masked."""
    if kind not in JOB_KINDS:
        raise ValueError(f"unknown job event {kind!r}")
    data = mask_job_json(job) if job is not None else None
    return f"dkron.events.job.{kind}", _body(f"job.{kind}", name, data)


def execution_event(kind: str, execution: dict[str, Any]) -> tuple[str, bytes]:
    """(subject, body) of an execution's step; `execution` is its API form."""
    if kind not in EXECUTION_KINDS:
        raise ValueError(f"unknown execution event {kind!r}")
    return f"dkron.events.execution.{kind}", _body(f"execution.{kind}", execution["job_name"], execution)


def _body(kind: str, job: str, data: Any) -> bytes:
    return msgspec.json.encode(EventBody(type=kind, time=utcnow().isoformat(), job=job, data=data))


def changed_job_key(body: bytes) -> str | None:
    """The job key a job event names, or None for a body that is not one."""
    try:
        event = msgspec.json.decode(body, type=EventBody)
    except msgspec.DecodeError:
        return None
    key = job_key(event.job) if event.job else ""
    return key if is_job_key(key) else None
