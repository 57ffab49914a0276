"""The audit log: every change made through the API, appended to the JetStream stream `DKRON_AUDIT`.

An entry is `{"time", "who", "role", "action", "target", "before", "after"}`: `who` is the token's name
(`anonymous` with authentication off; `nats:<subject>` for a NATS trigger, `leader` for the deletion of an
ephemeral job after its success), `before`/`after` the job as the API shows it where a job changed, and
otherwise what the action was about (a run's `force`, which pause). The stream keeps entries 365 days or
1 GiB, the oldest dropped first (`dkron_nats/kv/buckets.py`).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import APIError, NotFoundError

from dkron_nats.auth import Principal
from dkron_nats.kv.buckets import AUDIT_STREAM, AUDIT_SUBJECT_PREFIX
from dkron_nats.kv.typed import TRANSIENT, with_retry
from dkron_nats.secrets import mask_job_json
from dkron_nats.timefmt import rfc3339, utcnow

logger = logging.getLogger(__name__)

JOB_CREATE = "job.create"
JOB_UPDATE = "job.update"
JOB_DELETE = "job.delete"
JOB_TOGGLE = "job.toggle"
JOB_RUN = "job.run"
JOB_TRIGGER = "job.trigger"
"""A run asked for over NATS (`dkron.trigger.<job>`); `who` is `nats:<subject>`."""
EXECUTION_CANCEL = "execution.cancel"
EXECUTIONS_DELETE = "executions.delete"
PAUSE = "pause"
UNPAUSE = "unpause"
TOKEN_CREATE = "token.create"  # noqa: S105 - an action name, not a secret
TOKEN_REVOKE = "token.revoke"  # noqa: S105 - an action name, not a secret
LOGIN_FAILED = "login.failed"
"""A request sent a token that was refused (who: `(unauthenticated)`, target: the client's address)."""
LEAVE = "leave"
MAX_PAGE = 1000
"""Entries one `GET /v1/audit` returns at most, whatever `_end` asks for."""


class AuditEntry(msgspec.Struct, kw_only=True):
    time: str
    who: str
    role: str
    action: str
    target: str
    before: Any = None
    after: Any = None


class AuditLog:
    def __init__(self, js: JetStreamContext) -> None:
        self.js = js

    async def record(
        self, principal: Principal, action: str, target: str, before: Any = None, after: Any = None
    ) -> None:
        """Append one entry. The change it describes is already made, so a failure is logged, not raised."""
        entry = AuditEntry(
            time=rfc3339(utcnow()) or "",
            who=principal.name,
            role=principal.role,
            action=action,
            target=target,
            before=_masked(before),
            after=_masked(after),
        )
        data = msgspec.json.encode(entry)
        # A retried publish carries the same id, so the stream stores the entry once.
        headers = {"Nats-Msg-Id": uuid.uuid4().hex}
        subject = AUDIT_SUBJECT_PREFIX + action
        try:
            await with_retry(
                lambda: self.js.publish(subject, data, stream=AUDIT_STREAM, headers=headers),
                what="audit log append",
            )
        except (*TRANSIENT, APIError) as exc:
            logger.error(
                "could not append to the audit log (%s of %s by %s): %s", action, target, principal.name, exc
            )

    async def page(self, start: int, end: int) -> tuple[int, list[Any]]:
        """Entries `start` to `end` (exclusive) counted from the newest, and how many the log holds."""
        state = (await self.js.stream_info(AUDIT_STREAM)).state
        newest, oldest = int(state.last_seq or 0), int(state.first_seq or 0)
        end = min(end, start + MAX_PAGE)
        # Entries are only ever dropped from the old end, so sequence numbers count back without gaps.
        first = max(oldest, newest - end + 1, 1)
        entries = [entry for seq in range(newest - start, first - 1, -1) if (entry := await self._at(seq))]
        return int(state.messages or 0), entries

    async def _at(self, seq: int) -> Any:
        try:
            msg = await self.js.get_msg(AUDIT_STREAM, seq)
        except NotFoundError:  # aged out between the stream info and now
            return None
        return msgspec.json.decode(msg.data or b"null")


def _masked(value: Any) -> Any:
    """A job's secret config values never reach the audit log."""
    if isinstance(value, dict) and "executor_config" in value:
        return mask_job_json(value)
    return value
