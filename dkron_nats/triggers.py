"""Direct NATS triggering: publishing to `dkron.trigger.<job>` runs the job as a manual run would.

Every server listens on `dkron.trigger.*` in one queue group, so a trigger reaches a live server even while
the leader is being replaced. The server checks it (known, enabled job; a JSON payload, if any, of the
form `{"force": true, "env": {"NAME": "value"}}`, whose names must be among the job's `parameters`), stores
it in the `DKRON_TRIGGERS` work-queue stream with the launch id it assigns, records it in the audit log (who:
`nats:<subject>`), then answers a request with `{"job": ..., "launch": <id>, "status": "accepted"}` (or
`{"error": ...}`, storing nothing). The leader consumes the stream and launches each trigger under its
id; a trigger the leader took but did not finish launching is redelivered to the next leader, and a launch
sent again reaches the nodes that claimed it already, so a trigger runs once. A client that retries a
request with the same `Nats-Msg-Id` header is de-duplicated by the stream (two minutes).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import anyio
import msgspec
from anyio.abc import TaskStatus
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

from dkron_nats import audit
from dkron_nats.auth import Principal
from dkron_nats.errors import LeadershipLostError
from dkron_nats.jobs import JobService
from dkron_nats.kv.buckets import TRIGGERS_STREAM
from dkron_nats.kv.typed import TRANSIENT, with_retry
from dkron_nats.names import is_token, job_key, job_name_error
from dkron_nats.parameters import masked_env, run_env_error
from dkron_nats.subjects import ONLY_PARTITION, Partition, partition_for

logger = logging.getLogger(__name__)
TRIGGER_SUBJECTS = "dkron.trigger.*"
DURABLE = "leader-triggers"
_QUEUE = "dkron-triggers"
_MAX_ENV = 64


class TriggerPayload(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    force: bool = False
    env: dict[str, str] = msgspec.field(default_factory=dict)


class Trigger(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A checked trigger, as stored for the owner of the job's partition; or, with `parent`, a parent's
    ended launch handed by the parent's owner to the child's (leader/results.py)."""

    job: str
    launch: int
    force: bool = False
    env: dict[str, str] = msgspec.field(default_factory=dict)
    parent: str = ""
    """The parent job whose launch `launch` ended (then `job` is its dependent, and no NATS trigger)."""
    status: str = ""
    """How the parent's launch ended: success, failed or partially_failed."""


class TriggerReply(msgspec.Struct, kw_only=True, omit_defaults=True):
    job: str = ""
    launch: int = 0
    status: str = ""
    error: str = ""


class TriggerError(ValueError):
    """The trigger is refused; the message goes back to the client."""


def parse_trigger(subject: str, data: bytes, jobs: JobService, launch: int) -> Trigger:
    name = subject.removeprefix("dkron.trigger.")
    if job_name_error(name) or not is_token(job_key(name)):
        raise TriggerError(f"invalid job name in subject {subject!r}")
    spec = jobs.jobs.get(job_key(name))
    if spec is None:
        raise TriggerError(f"job {name} not found")
    if spec.disabled:
        raise TriggerError(f"job {name} is disabled")
    payload = _payload(data)
    refused = run_env_error(spec, payload.env)
    if refused is not None:
        raise TriggerError(refused[0])
    return Trigger(job=name, launch=launch, force=payload.force, env=payload.env)


def _payload(data: bytes) -> TriggerPayload:
    if not data.strip():
        return TriggerPayload()
    try:
        payload = msgspec.json.decode(data, type=TriggerPayload)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
        raise TriggerError(
            f'bad trigger payload: {exc}; send nothing, or JSON like {{"force": true, "env": {{"K": "v"}}}}'
        ) from exc
    if len(payload.env) > _MAX_ENV:
        raise TriggerError(f"bad trigger payload: env has more than {_MAX_ENV} variables")
    for name in payload.env:
        if not name or not (name[0].isalpha() or name[0] == "_") or not name.replace("_", "a").isalnum():
            raise TriggerError(f"bad trigger payload: env name {name!r} is not a valid variable name")
    return payload


class TriggerIntake:
    """Runs on every server: check, store, answer."""

    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        jobs: JobService,
        audit_log: audit.AuditLog | None = None,
        partitions: int = 1,
    ) -> None:
        self.nc = nc
        self.js = js
        self.partitions = partitions
        """The cluster's partition count: a trigger waits for the owner of its job's partition."""
        self.jobs = jobs
        self.audit_log = audit_log
        self._last_launch = 0

    def _next_launch(self) -> int:
        """A launch id (nanoseconds, like a slot) unique in this process even for same-instant triggers."""
        self._last_launch = max(time.time_ns(), self._last_launch + 1)
        return self._last_launch

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        sub = await self.nc.subscribe(TRIGGER_SUBJECTS, queue=_QUEUE)
        task_status.started()
        try:
            async with anyio.create_task_group() as tg:
                async for msg in sub.messages:
                    tg.start_soon(self._take, msg)
        finally:
            with anyio.move_on_after(2, shield=True):
                await sub.unsubscribe()

    async def _take(self, msg: Msg) -> None:
        try:
            trigger = parse_trigger(msg.subject, msg.data, self.jobs, self._next_launch())
            reply = await self._store(trigger, (msg.headers or {}).get("Nats-Msg-Id", ""))
            if reply.status == "accepted":
                await self._audit(msg.subject, trigger)
        except TriggerError as exc:
            reply = TriggerReply(error=str(exc))
        except TRANSIENT as exc:
            reply = TriggerReply(error=f"JetStream is unavailable, try again: {exc}")
        except Exception as exc:
            # One bad trigger must not stop the intake (the servers' only way to take triggers).
            logger.exception("trigger on %s could not be taken", msg.subject)
            reply = TriggerReply(error=f"internal error: {exc}")
        if msg.reply:
            await self.nc.publish(msg.reply, msgspec.json.encode(reply))

    async def _audit(self, subject: str, trigger: Trigger) -> None:
        """NATS carries no caller identity to a subscriber: the subject is what the log can say."""
        spec = self.jobs.jobs.get(job_key(trigger.job))
        if self.audit_log is None or spec is None:
            return
        who = Principal(name=f"nats:{subject}", role="operator")
        after = {"launch": trigger.launch, "force": trigger.force, "env": masked_env(spec, trigger.env)}
        await self.audit_log.record(who, audit.JOB_TRIGGER, trigger.job, after=after)

    async def _store(self, trigger: Trigger, msg_id: str) -> TriggerReply:
        headers = {"Nats-Msg-Id": msg_id or f"trigger-{trigger.launch}"}
        key = job_key(trigger.job)
        subject = partition_for(key, self.partitions).trigger_subject(key)
        ack = await with_retry(
            lambda: self.js.publish(subject, msgspec.json.encode(trigger), headers=headers), what="trigger"
        )
        if ack.duplicate:
            return TriggerReply(job=trigger.job, status="duplicate")
        return TriggerReply(job=trigger.job, launch=trigger.launch, status="accepted")


Launch = Callable[[Trigger], Awaitable[None]]


async def consume_triggers(
    js: JetStreamContext,
    launch: Launch,
    partition: Partition = ONLY_PARTITION,
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """A partition owner's side: launch every stored trigger of its jobs, acknowledging it only once it is
    launched."""
    config = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=10, max_ack_pending=1000)
    durable = partition.durable(DURABLE)
    sub = await with_retry(
        lambda: js.pull_subscribe(
            partition.triggers_filter, durable=durable, stream=TRIGGERS_STREAM, config=config
        ),
        attempts=30,
        what="triggers consumer",
    )
    task_status.started()
    try:
        while True:
            try:
                messages = await sub.fetch(32, timeout=1)
            except (NatsTimeoutError, TimeoutError):
                continue
            except TRANSIENT:
                await anyio.sleep(0.5)
                continue
            for msg in messages:
                try:
                    trigger = msgspec.json.decode(msg.data, type=Trigger)
                except msgspec.DecodeError:
                    logger.exception("dropping an undecodable trigger")
                    await msg.ack()
                    continue
                try:
                    await launch(trigger)
                except TRANSIENT:
                    await msg.nak(delay=1)  # JetStream is electing a leader: try again in a second
                    continue
                except LeadershipLostError:
                    raise  # not ours to launch any more: the next leader gets it again
                except Exception:
                    logger.exception(
                        "launching trigger %d of %s failed; dropped", trigger.launch, trigger.job
                    )
                await msg.ack()
    finally:
        with anyio.move_on_after(2, shield=True):
            await sub.unsubscribe()
