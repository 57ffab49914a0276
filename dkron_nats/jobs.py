"""Job definitions: create, update, delete, toggle, list. Shared by the HTTP API and (later) the CLI.

Definitions live in the jobs bucket and counters in the job-state bucket, so a user's update never races
with execution bookkeeping. `dependent_jobs` is derived from the children's `parent_job`, never stored.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

import msgspec

from dkron_nats import audit
from dkron_nats.auth import Principal
from dkron_nats.errors import (
    HasDependentsError,
    JobNotFoundError,
    ParentNotFoundError,
    PausedError,
    ValidationError,
)
from dkron_nats.jobinput import ValidatedJob
from dkron_nats.kv.cache import KVCache
from dkron_nats.kv.typed import TypedKV
from dkron_nats.models import JobSpec, JobState
from dkron_nats.names import job_key, job_name_from_key
from dkron_nats.subjects import partition_of
from dkron_nats.timefmt import later_of, utcnow

logger = logging.getLogger(__name__)
LEADER = Principal(name="leader", role="admin")
"""Who the audit log names for what the cluster does by itself (deleting an ephemeral job)."""

SORTABLE = {
    "id": "name",
    "name": "name",
    "displayname": "displayname",
    "schedule": "schedule",
    "success_count": "success_count",
    "error_count": "error_count",
    "last_success": "last_success",
    "last_error": "last_error",
    "next": "next",
    "status": "status",
}


@dataclass(frozen=True, slots=True)
class JobView:
    """A job as clients see it: definition, state and derived fields."""

    spec: JobSpec
    state: JobState
    dependents: list[str]
    waiting: list[str]
    """Jobs whose `depends_on` names this one (its fan-in children)."""
    partition: int = 0
    """The partition whose owner schedules it."""


class DependentsIndex:
    """parent name -> child names, kept current from the jobs cache."""

    def __init__(self, jobs: KVCache[JobSpec]) -> None:
        self._children: dict[str, set[str]] = defaultdict(set)
        self._parent_of: dict[str, str] = {}
        self._waiting: dict[str, set[str]] = defaultdict(set)
        """depends_on parent -> the children waiting for it."""
        self._waits_for: dict[str, list[str]] = {}
        for spec in jobs.values():
            self._on_change(job_key(spec.name), spec)
        jobs.listen(self._on_change)

    def _on_change(self, key: str, spec: JobSpec | None) -> None:
        name = job_name_from_key(key)
        old = self._parent_of.pop(name, None)
        if old:
            self._children[old].discard(name)
            if not self._children[old]:
                del self._children[old]
        if spec is not None and spec.parent_job:
            self._parent_of[name] = spec.parent_job
            self._children[spec.parent_job].add(name)
        for parent in self._waits_for.pop(name, []):
            self._waiting[parent].discard(name)
            if not self._waiting[parent]:
                del self._waiting[parent]
        if spec is not None and spec.depends_on:
            self._waits_for[name] = [dep.job for dep in spec.depends_on]
            for dep in spec.depends_on:
                self._waiting[dep.job].add(name)

    def children(self, name: str) -> list[str]:
        return sorted(self._children.get(name, ()))

    def waiting_on(self, name: str) -> list[str]:
        """Jobs whose `depends_on` names this one."""
        return sorted(self._waiting.get(name, ()))


class JobService:
    def __init__(
        self,
        jobs: KVCache[JobSpec],
        states: KVCache[JobState],
        is_paused: Callable[[], bool],
        announce: Callable[[str, JobSpec], Awaitable[None]] | None = None,
        audit_log: audit.AuditLog | None = None,
        partitions: int = 1,
    ) -> None:
        self.partitions = partitions
        """The cluster's partition count (a job's view says which one is its)."""
        self.jobs = jobs
        self.audit_log = audit_log
        self.states = states
        self.is_paused = is_paused
        self.announce = announce
        """Tells every server that a job changed (event, job key): faster than, and independent of, the
        KV watch, which can stall for seconds while JetStream elects a new stream leader."""
        self.dependents = DependentsIndex(jobs)

    @property
    def jobs_kv(self) -> TypedKV[JobSpec]:
        return self.jobs.store

    @property
    def states_kv(self) -> TypedKV[JobState]:
        return self.states.store

    def view(self, spec: JobSpec) -> JobView:
        key = job_key(spec.name)
        children, waiting = self.dependents.children(spec.name), self.dependents.waiting_on(spec.name)
        state = self.states.get(key) or JobState()
        return JobView(spec, state, children, waiting, partition_of(key, self.partitions))

    def get(self, name: str) -> JobView:
        spec = self.jobs.get(job_key(name))
        if spec is None:
            raise JobNotFoundError(name)
        return self.view(spec)

    def all_views(self) -> list[JobView]:
        return [self.view(spec) for spec in self.jobs.values()]

    async def upsert(self, job: ValidatedJob, *, check_pause: bool = True) -> JobSpec:
        """Create or replace a job (Dkron's update rules); returns what was stored."""
        if check_pause and self.is_paused():
            raise PausedError
        if job.parent_job and self.jobs.get(job_key(job.parent_job)) is None:
            raise ParentNotFoundError
        self._check_dependencies(job)
        key = job_key(job.name)
        while True:
            current = self.jobs.get_with_revision(key)
            spec = _spec_from(job, current[0] if current else None)
            rev = await self.jobs_kv.swap(key, spec, current[1] if current else None)
            if rev is not None:
                self.jobs.apply(key, spec, rev)
                break
            await self._refresh(key)
        await self._merge_submitted_state(key, job)
        await self._announce("updated" if current else "created", spec)
        return spec

    def _check_dependencies(self, job: ValidatedJob) -> None:
        """Every `depends_on` parent exists, and the job's parents do not lead back to it."""
        for dep in job.depends_on or []:
            if self.jobs.get(job_key(dep.job)) is None:
                raise ValidationError(f"depends_on names {dep.job}, which does not exist")
        path = self._path_back([dep.job for dep in job.depends_on or []], job.name, [job.name])
        if path is not None:
            raise ValidationError(f"depends_on would make a cycle: {' -> '.join(path)}")

    def _path_back(self, parents: list[str], target: str, path: list[str]) -> list[str] | None:
        """A chain of parents (depends_on and parent_job) from `parents` up to `target`, if one exists."""
        for parent in parents:
            if parent == target:
                return [*path, parent]
            if parent in path:
                continue
            spec = self.jobs.get(job_key(parent))
            if spec is None:
                continue
            above = [d.job for d in spec.depends_on or []] + ([spec.parent_job] if spec.parent_job else [])
            found = self._path_back(above, target, [*path, parent])
            if found is not None:
                return found
        return None

    async def _announce(self, event: str, spec: JobSpec) -> None:
        if self.announce is not None:
            await self.announce(event, spec)

    async def _refresh(self, key: str) -> None:
        fresh = await self.jobs_kv.get(key)
        if fresh is None:
            self.jobs.forget(key)
        else:
            self.jobs.apply(key, fresh[0], fresh[1])

    async def _merge_submitted_state(self, key: str, job: ValidatedJob) -> None:
        """Counters and last_* keep the larger/later of stored and submitted; status keeps the stored one."""
        await self.update_state(key, lambda st: _merged_state(st, job))

    async def update_state(self, key: str, change: Callable[[JobState], JobState | None]) -> JobState:
        """Compare-and-set loop on a job's state; `change` returns None for "nothing to write"."""
        state, _ = await self.change_state(key, change)
        return state

    async def change_state(
        self, key: str, change: Callable[[JobState], JobState | None]
    ) -> tuple[JobState, bool]:
        """Like `update_state`, and whether this call wrote the state.

        A stale cache only costs a retry: after a conflict `change` is asked again about the stored state,
        so "wrote" is decided by the bucket, not by what this process had seen."""
        current = self.states.get_with_revision(key)  # usually current: saves a read per update
        while True:
            old = current[0] if current else JobState()
            new = change(old)
            if new is None or new == old:
                return old, False
            rev = await self.states_kv.swap(key, new, current[1] if current else None)
            if rev is not None:
                self.states.apply(key, new, rev)
                return new, True
            current = await self.states_kv.get(key)

    async def delete(self, name: str) -> JobView:
        view = self.get(name)
        if view.dependents:
            raise HasDependentsError(name)
        waiting = self.dependents.waiting_on(name)
        if waiting:
            raise ValidationError(
                f"job {name} cannot be deleted: {', '.join(waiting)} depend on it (depends_on); "
                "remove it from their depends_on first"
            )
        key = job_key(name)
        await self.jobs_kv.delete(key)
        self.jobs.forget(key)
        await self.states_kv.delete(key)
        self.states.forget(key)
        await self._announce("deleted", view.spec)
        return view

    async def delete_ephemeral(self, name: str, group: int) -> None:
        """Delete an ephemeral job once a launch of it succeeded: audited like a user's deletion."""
        view = await self.delete(name)
        if self.audit_log is not None:
            before = msgspec.to_builtins(view.spec)
            after = {"reason": "an ephemeral job is deleted after its launch succeeded", "launch": group}
            await self.audit_log.record(LEADER, audit.JOB_DELETE, name, before=before, after=after)

    async def toggle(self, name: str) -> JobSpec:
        key = job_key(name)
        while True:
            current = self.jobs.get_with_revision(key)
            if current is None:
                raise JobNotFoundError(name)
            spec, revision = current
            enabled_now = spec.disabled
            changed = _replace(
                spec, disabled=not spec.disabled, anchor=utcnow() if enabled_now else spec.anchor
            )
            rev = await self.jobs_kv.update(key, changed, revision)
            if rev is not None:
                self.jobs.apply(key, changed, rev)
                await self._announce("updated", changed)
                return changed
            await self._refresh(key)


def _replace(spec: JobSpec, **changes: object) -> JobSpec:
    return msgspec.structs.replace(spec, **changes)


def _schedule_changed(old: JobSpec, job: ValidatedJob) -> bool:
    return (
        old.schedule != job.schedule
        or old.timezone != job.timezone
        or old.starts_at != job.starts_at
        or (old.disabled and not job.disabled)
        or old.parent_job != job.parent_job
    )


def _spec_from(job: ValidatedJob, old: JobSpec | None) -> JobSpec:
    anchor: datetime | None = utcnow()
    if old is not None and not _schedule_changed(old, job):
        anchor = old.anchor
    return JobSpec(
        name=job.name,
        displayname=job.displayname,
        timezone=job.timezone,
        schedule=job.schedule,
        owner=job.owner,
        owner_email=job.owner_email,
        disabled=job.disabled,
        tags=job.tags,
        metadata=job.metadata,
        retries=job.retries,
        parent_job=job.parent_job,
        processors=job.processors,
        concurrency=job.concurrency,  # "" is stored as sent, as Dkron does (it behaves as allow)
        executor=job.executor,
        executor_config=job.executor_config,
        ephemeral=job.ephemeral,
        starts_at=job.starts_at,
        expires_at=job.expires_at,
        misfire_policy=job.misfire_policy,
        starting_deadline=job.starting_deadline,
        misfire_max=job.misfire_max,
        retry_backoff=job.retry_backoff,
        retry_on_other_node=job.retry_on_other_node,
        depends_on=job.depends_on,
        history_limit=job.history_limit,
        history_max_age=job.history_max_age,
        dst_policy=job.dst_policy,
        notify_on=job.notify_on,
        parameters=job.parameters,
        anchor=anchor,
    )


def _merged_state(state: JobState, job: ValidatedJob) -> JobState:
    # Everything else (history count, fan-in progress) is the cluster's own bookkeeping: kept as is.
    return msgspec.structs.replace(
        state,
        success_count=max(state.success_count, job.success_count),
        error_count=max(state.error_count, job.error_count),
        last_success=later_of(state.last_success, job.last_success),
        last_error=later_of(state.last_error, job.last_error),
        status=state.status or job.status,
    )
