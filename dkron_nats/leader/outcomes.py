"""Announcing a recorded execution, and recording the slots that never ran (missed, skipped) directly.

A missed or skipped slot changes no counter and sets nothing off, so the leader stores its record itself
(create-only by its id, so a takeover that records it again changes nothing) instead of sending it through
the results stream: 3 messages instead of about 10. It matters when the leader is overloaded: every launch
that comes late records the slot it missed, and if a miss cost as much as a run, the leader would fall
further behind with each one.
"""

from __future__ import annotations

from collections import Counter

from nats.aio.client import Client

from dkron_nats.events import execution_event
from dkron_nats.http.render import execution_json
from dkron_nats.kv.executions import ExecutionStore
from dkron_nats.metrics import (
    EXECUTIONS_FAILED,
    EXECUTIONS_SUCCEEDED,
    SCHEDULE_LAG,
    SLOTS_MISSED,
    SLOTS_SKIPPED,
)
from dkron_nats.models import Execution, JobSpec

NOT_RUN = ("missed", "skipped")


async def announce(nc: Client, ex: Execution) -> None:
    """Metrics and the execution event of a record seen for the first time."""
    kind = ex.status if ex.status in NOT_RUN else "finished"
    if kind == "missed":
        SLOTS_MISSED.labels(ex.job_name).inc()
    elif kind == "skipped":
        SLOTS_SKIPPED.labels(ex.job_name).inc()
    else:
        (EXECUTIONS_SUCCEEDED if ex.success else EXECUTIONS_FAILED).labels(ex.job_name).inc()
        if ex.attempt == 1 and ex.scheduled_at and ex.started_at and ex.node_name:
            SCHEDULE_LAG.observe(max(0.0, (ex.started_at - ex.scheduled_at).total_seconds()))
    subject, body = execution_event(kind, execution_json(ex))
    await nc.publish(subject, body)


def trim_every(keep: int) -> int:
    """A job's history is trimmed back to `keep` once every keep/10 records past it (1 to 50): a trim is a
    JetStream API call, and one per execution was a large share of the cost of each."""
    return max(1, min(50, keep // 10))


class NotRunRecorder:
    """Stores and announces missed and skipped slots; trims the history of jobs that only miss."""

    def __init__(self, nc: Client, executions: ExecutionStore, keep: int) -> None:
        self.nc = nc
        self.executions = executions
        self.keep = keep
        """Execution records kept per job (`--max-executions`) unless the job says otherwise."""
        self._recorded: Counter[str] = Counter()
        """Records this leader stored directly, per job: when to trim."""

    @staticmethod
    def takes(job: JobSpec, ex: Execution) -> bool:
        """Whether this record is stored here (a job with `history_max_age` keeps its age marks in its
        state, which the result processor writes: its records go the long way)."""
        return ex.status in NOT_RUN and not job.history_max_age

    async def record(self, job: JobSpec, ex: Execution) -> None:
        if await self.executions.claim(ex) is None:
            return  # recorded before: a takeover concluding the same decision again
        await announce(self.nc, ex)
        self._recorded[job.name] += 1
        keep = job.history_limit or self.keep
        if self._recorded[job.name] % trim_every(keep) == 0:
            await self.executions.trim(job.name, keep)
