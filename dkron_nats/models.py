"""What is stored in JetStream: job definitions, job state, executions, launch decisions, members.

Every stored value is a msgspec Struct encoded as JSON. The API's wire shapes (Dkron's exact JSON) are
rendered from these in `dkron_nats/http/render.py`, so storage can evolve without breaking clients.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeVar

import msgspec

from dkron_nats.names import job_key

T = TypeVar("T", bound=msgspec.Struct)


class RetryBackoff(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """How long to wait before each retry (see retry.py); durations as the user wrote them."""

    initial: str = "1s"
    max: str = "5m"
    multiplier: float = 2.0
    jitter: bool = True


DEPENDENCY_CONDITIONS = ("success", "failure", "always")


class Dependency(msgspec.Struct, kw_only=True):
    """`depends_on` entry: the child waits for a launch of `job` that ended as `on` requires."""

    job: str
    on: str = "success"


class DstPolicy(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What a cron job does at DST transitions; "" keeps the default rule (see docs/scheduling.md)."""

    gap: str = ""
    """In a spring-forward gap: run_at_transition or skip."""
    overlap: str = ""
    """In a fall-back overlap: once or twice."""


class Parameter(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A variable a run may set (a NATS trigger's or `POST /v1/jobs/{job}/run`'s `env`); see parameters.py."""

    name: str
    secret: bool = False
    """Its values are masked wherever dkron-nats shows them (the audit log)."""


class JobSpec(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A job as the user defined it. Owned by the API."""

    name: str
    displayname: str = ""
    timezone: str = ""
    schedule: str = ""
    owner: str = ""
    owner_email: str = ""
    disabled: bool = False
    tags: dict[str, str] | None = None
    metadata: dict[str, str] | None = None
    retries: int = 0
    dependent_jobs: list[str] | None = None
    parent_job: str = ""
    processors: dict[str, dict[str, str]] | None = None
    concurrency: str = "allow"
    executor: str = ""
    executor_config: dict[str, str] | None = None
    ephemeral: bool = False
    starts_at: datetime | None = None
    expires_at: datetime | None = None
    misfire_policy: str = "run_once"
    """skip, run_once or run_all: which overdue slots still run (see misfire.py)."""
    starting_deadline: str = ""
    """A duration as the user wrote it; "" means the server's --starting-deadline."""
    misfire_max: int = 10
    retry_backoff: RetryBackoff | None = None
    """None: retry at once, as Dkron does."""
    retry_on_other_node: bool = False
    depends_on: list[Dependency] | None = None
    history_limit: int = 0
    """Execution records kept (the newest); 0 means the server's --max-executions."""
    history_max_age: str = ""
    """Records older than this duration are purged; "" keeps them (up to the count)."""
    dst_policy: DstPolicy | None = None
    notify_on: str = "always"
    """Which ended launches send mail and webhooks: always, failure, recovery or failure_and_recovery."""
    parameters: list[Parameter] | None = None
    """The only variables a run may set; None (jobs stored before it existed too): none."""
    anchor: datetime | None = None
    """When the schedule (or the enabled state) last changed: `@every` counts from here, and no slot
    before it is ever due."""

    def wanted_tags(self) -> tuple[dict[str, str], int | None]:
        """Dkron's target-node spec: `{"role": "web:2"}` -> the tag values a node must have, and the lowest
        count (None = every matching node)."""
        wanted: dict[str, str] = {}
        count: int | None = None
        for key, raw in (self.tags or {}).items():
            value, sep, n = raw.partition(":")
            wanted[key] = value
            if sep:
                count = int(n) if count is None else min(count, int(n))
        return wanted, count

    def runs_on(self, node_tags: Mapping[str, str]) -> bool:
        """Whether a node with these tags is one this job may run on."""
        return has_tags(node_tags, self.wanted_tags()[0])


def has_tags(node_tags: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    """Whether a node has every tag value a job wants (the one matching rule of leader and agents)."""
    return all(node_tags.get(key) == value for key, value in wanted.items())


class JobState(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What happened to a job: counters and status. Owned by the leader's result processing."""

    success_count: int = 0
    error_count: int = 0
    last_success: datetime | None = None
    last_error: datetime | None = None
    status: str = ""
    applied_seq: int = 0
    """The highest results-stream sequence already counted, so a redelivered result is never counted twice."""
    recorded: int = 0
    """Records stored since the history was last cleared; history is trimmed only beyond the limit."""
    fanin: dict[str, int] | None = None
    """`depends_on` parents that finished as required since the child last ran: parent -> launch group."""
    fanin_used: dict[str, int] | None = None
    """The parents' launches that the child's last fan-in run consumed (a redelivery adds nothing)."""
    fanin_pending: int = 0
    """A fan-in run decided but maybe not sent yet (its group); sent again until cleared."""
    age_marks: list[tuple[int, int]] | None = None
    """(stream sequence, written ns) of some of the job's records, a tenth of `history_max_age` apart:
    everything before a mark older than the age can be purged by sequence, without listing records."""


class Execution(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One run of a job on one node (or a slot that was missed or skipped)."""

    id: str
    job_name: str
    group: int
    attempt: int = 1
    node_name: str = ""
    started_at: datetime | None = None
    """When its executor started; None while it waits on its node for a free execution slot (and for
    good, if it is cancelled before one comes free)."""
    finished_at: datetime | None = None
    success: bool = False
    output: str = ""
    status: str = "running"
    """running, success, failed, missed or skipped."""
    scheduled_at: datetime | None = None
    """The slot this execution belongs to; None for manual runs."""
    fence: int = 0
    """The leader lease revision that launched it."""
    partition: int | None = None
    """In a cluster of several partitions, the one whose owner launched it: the fence is of that
    partition's lease, and the result goes to that owner (None: the cluster has one partition)."""

    @property
    def finished(self) -> bool:
        return self.status != "running"

    def lost(self, why: str, now: datetime) -> ExecutionResult:
        """The verdict that this execution's agent died: failed, with the reason in its output."""
        note = f"agent lost: node {self.node_name} {why} while the execution ran\n"
        ended = msgspec.structs.replace(
            self,
            finished_at=now,
            success=False,
            status="failed",
            output=f"{self.output}\n{note}" if self.output else note,
        )
        return ExecutionResult(execution=ended, verdict=True)


class LaunchCursor(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The last slot of a job the scheduler has resolved (launched, missed or skipped).

    Written with compare-and-set *before* dispatch: a slot at or before `slot_ns` is never launched again.
    """

    slot_ns: int
    group: int
    targets: list[str] = msgspec.field(default_factory=list)
    fence: int = 0
    outcome: str = "launched"
    """What became of `slot_ns`: launched, missed, skipped or failed (no node to run it)."""
    reason: str = ""
    missed: list[int] = msgspec.field(default_factory=list)
    """Slots (ns) resolved as missed by this same move; their records are derived from the cursor, so a
    leader that dies before publishing them leaves them to its successor, never to nobody."""
    earlier_missed: bool = False
    missed_status: str = "missed"
    """`skipped` when the slots in `missed` fell due while a `forbid` job's previous run went on."""
    replaces: int = 0
    """A `replace` job: the launch (group) this one cancels and takes the job's lease from."""
    decided_ns: int = 0
    """When the decision was made: a missed slot's reason depends on how late it was then."""


DECISION_LOG_VERSION = 1
"""The shape of `DecisionBatch` (a later shape raises it, and converts older batches as it reads them)."""


class DecisionBatch(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One append to the leader's decision log (`dkron.decisions.<partition>`, leader/decisions.py).

    Every append is a compare-and-set on the log's last sequence, so the log is one chain per partition: a
    new leader's `takeover` append fences every earlier leader (its next append is refused).
    """

    fence: int
    """The term of the leader that wrote it."""
    kind: str = "decisions"
    """`decisions` (cursors decided together), `takeover` (a new leader's first append) or `checkpoint`
    (every live cursor again, so what came before can be purged)."""
    cursors: dict[str, LaunchCursor] = msgspec.field(default_factory=dict)
    """Job key -> the cursor decided for it."""
    v: int = DECISION_LOG_VERSION


class CancelLaunch(msgspec.Struct, kw_only=True):
    """Stop the running executions of one launch of a job (or only `execution`), saying why in the output."""

    job: str
    group: int
    reason: str
    execution: str = ""


class PartitionPlan(msgspec.Struct, kw_only=True):
    """Which server owns each partition while exactly `servers` are live, balanced by the partitions' jobs
    (leader/balance.py); stored in the settings bucket under `PARTITION_PLAN_KEY`."""

    servers: list[str] = msgspec.field(default_factory=list)
    """The live servers the plan is for, sorted: with any other set the plain assignment applies."""
    owners: list[str] = msgspec.field(default_factory=list)
    """Partition index -> its server."""


PARTITION_PLAN_KEY = "partition-plan"


class Member(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A node's heartbeat in the registry."""

    name: str
    addr: str
    port: int
    tags: dict[str, str]
    server: bool
    version: str
    started_at: datetime
    status: str = "alive"
    running: list[str] = msgspec.field(default_factory=list)
    """Keys of the executions this node's agent is running, so the leader can tell which are lost
    (those waiting for a slot too)."""
    max_concurrent_executions: int = 0
    """Its execution slots (`--max-concurrent-executions`); 0: no limit."""
    executions_running: int = 0
    """Slots in use at the last heartbeat."""
    executions_queued: int = 0
    """Executions waiting on the node for a free slot at the last heartbeat."""
    partitions: int = 0
    """Partitions of the job space this server owned at the last heartbeat."""
    leaving: bool = False
    """The server is stopping: the others take its partitions at once as it releases them."""


class RunRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What the leader sends agents: everything needed to run one execution.

    Sent to one node (`dkron.run.node.<node>`), `execution` is that node's. Sent on the job's tag subject,
    `targets` names who runs it and `execution` has no id yet: either the nodes the leader chose (each runs
    `<group>-<node>`), or lanes `_1`..`_N` of a `value:N` job, which the first N matching agents to claim
    one take (`<group>-_<i>`, one lane per node)."""

    execution: Execution
    job: JobSpec
    siblings: list[str] = msgspec.field(default_factory=list)
    """Execution ids of the same launch (for the group status); an agent leaves out its own."""
    targets: list[str] = msgspec.field(default_factory=list)
    """On a tag subject: the nodes, or the lanes, this launch is for."""
    env: dict[str, str] = msgspec.field(default_factory=dict)
    """Extra environment for this run only (a NATS trigger's or a run request's `env`): names among the
    job's `parameters`, checked by the server that took the run."""
    resent: bool = False
    """Sent again by a new leader (an earlier leader's request was still waiting when its term ended): a
    node that holds a lane of this launch already takes no other."""


class ExecutionResult(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What an agent publishes when an execution ends."""

    execution: Execution
    siblings: list[str] = msgspec.field(default_factory=list)
    verdict: bool = False
    """A ruling that the agent was lost; ignored if the execution's own result came first."""
    claimed_at: int = 0
    """The revision of the execution's claim. The leader stores the final record over exactly that revision
    (compare-and-set), so of a result and an "agent lost" verdict only the first applied lands and counts;
    0 (a record the leader made, or a result of the previous version): stored as it is."""

    @property
    def msg_id(self) -> str:
        """JetStream de-duplication id: one result per execution, plus at most one verdict."""
        ex = self.execution
        return f"{job_key(ex.job_name)}.{ex.id}" + (":lost" if self.verdict else "")


_encoder = msgspec.json.Encoder()


def encode(value: msgspec.Struct | dict[str, Any] | list[Any]) -> bytes:
    return _encoder.encode(value)


def decode(data: bytes, kind: type[T]) -> T:
    return msgspec.json.decode(data, type=kind)
