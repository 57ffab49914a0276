"""Dkron's JSON shapes, field by field and in Dkron's key order."""

from __future__ import annotations

import uuid
from datetime import datetime, tzinfo
from typing import Any

import msgspec

from dkron_nats.jobinput import ValidatedJob
from dkron_nats.jobs import JobView
from dkron_nats.models import DstPolicy, Execution, Member
from dkron_nats.parameters import parameters_json
from dkron_nats.timefmt import ZERO_TIME, rfc3339, rfc3339_or_zero

SERF_STATUS = {"none": 0, "alive": 1, "leaving": 2, "left": 3, "failed": 4}


def job_json(view: JobView, next_fire: datetime | None) -> dict[str, Any]:
    spec, state = view.spec, view.state
    return {
        "id": spec.name,
        "name": spec.name,
        "displayname": spec.displayname,
        "timezone": spec.timezone,
        "schedule": spec.schedule,
        "owner": spec.owner,
        "owner_email": spec.owner_email,
        "success_count": state.success_count,
        "error_count": state.error_count,
        "last_success": rfc3339(state.last_success),
        "last_error": rfc3339(state.last_error),
        "disabled": spec.disabled,
        "tags": spec.tags,
        "metadata": spec.metadata,
        "retries": spec.retries,
        "dependent_jobs": view.dependents or None,
        "parent_job": spec.parent_job,
        "processors": spec.processors or {},
        "concurrency": spec.concurrency,
        "executor": spec.executor,
        "executor_config": spec.executor_config,
        "status": state.status,
        "next": rfc3339_or_zero(next_fire),
        "ephemeral": spec.ephemeral,
        "starts_at": rfc3339(spec.starts_at),
        "expires_at": rfc3339(spec.expires_at),
        "misfire_policy": spec.misfire_policy,
        "starting_deadline": spec.starting_deadline,
        "misfire_max": spec.misfire_max,
        "retry_backoff": msgspec.to_builtins(spec.retry_backoff),
        "retry_on_other_node": spec.retry_on_other_node,
        "depends_on": msgspec.to_builtins(spec.depends_on),
        "depended_on_by": view.waiting or None,
        "history_limit": spec.history_limit,
        "history_max_age": spec.history_max_age,
        "dst_policy": _dst_json(spec.dst_policy),
        "notify_on": spec.notify_on,
        "parameters": parameters_json(spec.parameters),
        "partition": view.partition,
    }


def echo_json(job: ValidatedJob) -> dict[str, Any]:
    """The create/update answer: the request as parsed, with `id` set and `concurrency` defaulted."""
    return {
        "id": job.name,
        "name": job.name,
        "displayname": job.displayname,
        "timezone": job.timezone,
        "schedule": job.schedule,
        "owner": job.owner,
        "owner_email": job.owner_email,
        "success_count": job.success_count,
        "error_count": job.error_count,
        "last_success": rfc3339(job.last_success),
        "last_error": rfc3339(job.last_error),
        "disabled": job.disabled,
        "tags": job.tags,
        "metadata": job.metadata,
        "retries": job.retries,
        "dependent_jobs": job.dependent_jobs,
        "parent_job": job.parent_job,
        "processors": job.processors,
        "concurrency": job.concurrency,
        "executor": job.executor,
        "executor_config": job.executor_config,
        "status": job.status,
        "next": rfc3339_or_zero(job.next),
        "ephemeral": job.ephemeral,
        "starts_at": rfc3339(job.starts_at),
        "expires_at": rfc3339(job.expires_at),
        "misfire_policy": job.misfire_policy,
        "starting_deadline": job.starting_deadline,
        "misfire_max": job.misfire_max,
        "retry_backoff": msgspec.to_builtins(job.retry_backoff),
        "retry_on_other_node": job.retry_on_other_node,
        "depends_on": msgspec.to_builtins(job.depends_on),
        "history_limit": job.history_limit,
        "history_max_age": job.history_max_age,
        "dst_policy": _dst_json(job.dst_policy),
        "notify_on": job.notify_on,
        "parameters": parameters_json(job.parameters),
    }


def _dst_json(policy: DstPolicy | None) -> dict[str, str]:
    """The effective rules: "default" where the job keeps the spec's own (docs/scheduling.md)."""
    policy = policy or DstPolicy()
    return {"gap": policy.gap or "default", "overlap": policy.overlap or "default"}


def fire_json(fire: datetime, zone: tzinfo) -> dict[str, str]:
    """One upcoming fire: the local time with its offset, the same instant in UTC, and the offset."""
    local = fire.astimezone(zone)
    offset = local.strftime("%z")
    return {
        "at": rfc3339_or_zero(fire, zone),
        "utc": rfc3339_or_zero(fire),
        "utc_offset": f"{offset[:3]}:{offset[3:]}",
        "zone_abbreviation": local.tzname() or "",
    }


def execution_json(
    ex: Execution, tz: tzinfo | None = None, output_limit: int | None = None, list_view: bool = False
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": ex.id,
        "job_name": ex.job_name,
        "started_at": rfc3339_or_zero(ex.started_at, tz),
        "finished_at": rfc3339_or_zero(ex.finished_at if ex.finished else None, tz),
        "success": ex.success,
    }
    output = ex.output
    truncated = False
    if output_limit is not None and len(output.encode()) > output_limit:
        output = output.encode()[-output_limit:].decode("utf-8", errors="ignore") if output_limit else ""
        truncated = True
    if output:
        out["output"] = output
    if ex.node_name:
        out["node_name"] = ex.node_name
    if ex.group:
        out["group"] = ex.group
    if ex.attempt:
        out["attempt"] = ex.attempt
    if list_view:
        out["output_truncated"] = truncated
    out["scheduled_at"] = rfc3339(ex.scheduled_at, tz)
    out["status"] = ex.status
    return out


def member_json(member: Member, *, with_ids: bool = True, status: str = "alive") -> dict[str, Any]:
    out: dict[str, Any] = {
        "Name": member.name,
        "Addr": member.addr,
        "Port": member.port,
        "Tags": member.tags,
        "Status": SERF_STATUS.get(status, 0),
        "ProtocolMin": 1,
        "ProtocolMax": 5,
        "ProtocolCur": 2,
        "DelegateMin": 2,
        "DelegateMax": 5,
        "DelegateCur": 4,
        # Execution slots: dkron-nats's own, in Dkron's style.
        "MaxConcurrentExecutions": member.max_concurrent_executions,
        "ExecutionsRunning": member.executions_running,
        "ExecutionsQueued": member.executions_queued,
        "Partitions": member.partitions,
    }
    if with_ids:
        out["id"] = str(uuid.uuid4())
        out["statusText"] = status
    return out


__all__ = ["ZERO_TIME", "echo_json", "execution_json", "job_json", "member_json"]
