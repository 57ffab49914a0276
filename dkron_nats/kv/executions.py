"""Execution records: one KV key per execution, `<job key>.<execution id>`.

Execution ids are `<trigger time in ns>-<node>`, so keys sort chronologically and the id of a launch is
known before it runs: an agent claims an execution by creating its key, which makes a repeated run request
harmless. The claim is create-only in the strict sense (refused over a delete marker too, unlike nats-py's
`kv.create`), so a record that was deleted can never be claimed, and run, again. Old records are removed
with a subject-filtered stream purge, which leaves no tombstones.
"""

from __future__ import annotations

import re

from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from dkron_nats.kv.publisher import JsPublisher
from dkron_nats.kv.typed import TypedKV, with_retry
from dkron_nats.models import Execution
from dkron_nats.names import job_key

EXECUTION_ID = re.compile(r"[0-9]{1,20}-[A-Za-z0-9_-]{1,64}(=[0-9]{1,6})?")
"""What an execution id looks like; anything else (from a URL) names no execution."""


def execution_id(trigger_ns: int, node: str) -> str:
    return f"{trigger_ns}-{node}"


LANE_PREFIX = "_"
"""Lanes of a `value:N` launch are `_1`..`_N`; node names never start with it (checked at the edge)."""


def lanes(count: int) -> list[str]:
    return [f"{LANE_PREFIX}{i}" for i in range(1, count + 1)]


def is_lane(target: str) -> bool:
    return target.startswith(LANE_PREFIX)


def lane_of(exec_id: str, group: int) -> str:
    """The node part of an execution id of `group` (`<group>-<lane>[=<attempt>]`)."""
    return exec_id.split("=")[0][len(str(group)) + 1 :]


class ExecutionStore:
    def __init__(self, kv: KeyValue, js: JetStreamContext, publisher: JsPublisher | None = None) -> None:
        self.typed = TypedKV(kv, Execution, publisher)
        self.kv = kv
        self.js = js

    @staticmethod
    def key(job_name: str, exec_id: str) -> str:
        return f"{job_key(job_name)}.{exec_id}"

    def _subject(self, key: str) -> str:
        return f"$KV.{self.typed.bucket}.{key}"

    async def claim(self, execution: Execution) -> int | None:
        """Create the record; its revision, or None if this execution exists already (a repeated request)."""
        return await self.typed.create_only(self.key(execution.job_name, execution.id), execution)

    async def finish(self, execution: Execution, claimed_at: int) -> int | None:
        """Store the final record over the claim made at revision `claimed_at`; None if the record changed
        since (the leader ruled the agent lost first, or the record was trimmed away)."""
        return await self.typed.update(self.key(execution.job_name, execution.id), execution, claimed_at)

    async def get_with_revision(self, job_name: str, exec_id: str) -> tuple[Execution, int] | None:
        if EXECUTION_ID.fullmatch(exec_id) is None:
            return None
        return await self.typed.get(self.key(job_name, exec_id))

    async def put(self, execution: Execution) -> int:
        """Store the record; its stream sequence."""
        return await self.typed.put(self.key(execution.job_name, execution.id), execution)

    async def get(self, job_name: str, exec_id: str) -> Execution | None:
        found = await self.get_with_revision(job_name, exec_id)
        return found[0] if found else None

    async def history(self, job_name: str, newest: int | None = None) -> list[Execution]:
        """The stored executions of a job (only the `newest` ones if given), oldest first."""
        found = [ex async for _, ex, _ in self.typed.scan(f"{job_key(job_name)}.*")]
        found.sort(key=lambda ex: (ex.group, ex.id))
        return found[-newest:] if newest else found

    async def trim(self, job_name: str, keep: int) -> None:
        """Keep only the `keep` most recently written records of a job (one call, no listing)."""
        subject = self._subject(f"{job_key(job_name)}.*")
        await with_retry(lambda: self.js.purge_stream(f"KV_{self.typed.bucket}", subject=subject, keep=keep))

    async def purge_before(self, job_name: str, seq: int) -> None:
        """Drop the job's records written before stream sequence `seq` (one call, no listing)."""
        subject = self._subject(f"{job_key(job_name)}.*")
        await with_retry(lambda: self.js.purge_stream(f"KV_{self.typed.bucket}", subject=subject, seq=seq))

    async def purge_job(self, job_name: str) -> None:
        subject = self._subject(f"{job_key(job_name)}.*")
        await with_retry(lambda: self.js.purge_stream(f"KV_{self.typed.bucket}", subject=subject))
