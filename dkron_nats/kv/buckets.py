"""The buckets and streams dkron-nats keeps in JetStream, created idempotently at start-up."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, KeyValueConfig, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from dkron_nats.kv.output import OUTPUT_STREAM, OUTPUT_SUBJECTS
from dkron_nats.kv.typed import with_retry
from dkron_nats.subjects import DECISIONS_SUBJECTS, RUNS_SUBJECTS

logger = logging.getLogger(__name__)

JOBS = "dkron-jobs"
JOB_STATE = "dkron-job-state"
EXECUTIONS = "dkron-executions"
LEGACY_CURSORS = "dkron-cursors"
"""Each job's launch cursor, one key per job, up to 0.1.x; read once into the decision log, then deleted."""
LEADER = "dkron-leader"
MEMBERS = "dkron-members"
SETTINGS = "dkron-settings"
STATS = "dkron-stats"
LOCKS = "dkron-locks"
TOKENS = "dkron-tokens"
"""API tokens: name -> role and the token's SHA-256 (dkron_nats/auth.py)."""
BUCKET_NAMES = (JOBS, JOB_STATE, EXECUTIONS, LEADER, MEMBERS, SETTINGS, STATS, LOCKS, TOKENS)

DECISIONS_STREAM = "DKRON_DECISIONS"
"""The leader's decision logs (`dkron.decisions.<partition>`): what each job's last decided slot is."""
PARTITIONS_METADATA = "dkron-partitions"
DEFAULT_PARTITIONS = 16
"""A new cluster's partition count: up to 16 servers share its scheduling, and a lone server's 16 leases
cost little (one renewal each every 2 s)."""
RUNS_STREAM = "DKRON_RUNS"
"""Run requests (`dkron.run.>`), kept until every agent consumer they match has acknowledged them."""
RUNS_MAX_AGE = 3600.0
RESULTS_STREAM = "DKRON_RESULTS"
RESULTS_CONSUMER = "dkron-leader"
"""The leader's durable consumer of DKRON_RESULTS (whichever server leads takes it over)."""
RESULTS_SUBJECTS = "dkron.result.>"
TRIGGERS_STREAM = "DKRON_TRIGGERS"
STORED_TRIGGERS = "dkron.triggered.>"
"""Triggers checked by a server and waiting for the leader to launch them (see dkron_nats/triggers.py)."""
AUDIT_STREAM = "DKRON_AUDIT"
AUDIT_SUBJECT_PREFIX = "dkron.audit."
"""Followed by the action, e.g. `dkron.audit.job.update` (see dkron_nats/audit.py)."""


@dataclass(frozen=True, slots=True)
class StorageLimits:
    replicas: int = 1
    lease_ttl: float = 15.0
    member_retention: float = 86_400.0
    """How long the record of a node whose heartbeats stopped is kept (Serf's reconnect timeout): any
    server that becomes leader later still learns which executions that node was running."""
    output_max_age: float = 7 * 86_400.0
    output_max_bytes: int = 1024**3
    """Live output of all executions together; the oldest is dropped first."""
    audit_max_age: float = 365 * 86_400.0
    audit_max_bytes: int = 1024**3
    partitions: int = DEFAULT_PARTITIONS
    """Written into the decision stream's metadata when it is created: the cluster's partition count."""


@dataclass(slots=True)
class Buckets:
    jobs: KeyValue
    job_state: KeyValue
    executions: KeyValue
    leader: KeyValue
    members: KeyValue
    settings: KeyValue
    stats: KeyValue
    locks: KeyValue
    tokens: KeyValue


async def _bucket(js: JetStreamContext, config: KeyValueConfig) -> KeyValue:
    try:
        kv: KeyValue = await js.key_value(config.bucket)
        return kv
    except (BucketNotFoundError, NotFoundError):
        pass
    try:
        created: KeyValue = await with_retry(lambda: js.create_key_value(config), what="bucket create")
        logger.info("created bucket %s (replicas=%d)", config.bucket, config.replicas)
        return created
    except BadRequestError:  # another server created it in between
        existing: KeyValue = await js.key_value(config.bucket)
        return existing


async def ensure_buckets(js: JetStreamContext, limits: StorageLimits) -> Buckets:
    # A cluster made before the decision log (0.1.x: it has the cursors bucket) has one partition, and keeps
    # it. (Not "the jobs bucket exists": servers starting together create it for each other.)
    partitions = 1 if await _stream_exists(js, f"KV_{LEGACY_CURSORS}") else limits.partitions
    r = limits.replicas
    file = StorageType.FILE

    def cfg(bucket: str, **extra: float) -> KeyValueConfig:
        return KeyValueConfig(bucket=bucket, history=1, replicas=r, storage=file, **extra)  # type: ignore[arg-type]

    buckets = Buckets(
        jobs=await _bucket(js, cfg(JOBS)),
        job_state=await _bucket(js, cfg(JOB_STATE)),
        executions=await _bucket(js, cfg(EXECUTIONS)),
        leader=await _bucket(js, cfg(LEADER, ttl=limits.lease_ttl)),
        members=await _bucket(js, cfg(MEMBERS, ttl=limits.member_retention)),
        settings=await _bucket(js, cfg(SETTINGS)),
        stats=await _bucket(js, cfg(STATS)),
        locks=await _bucket(js, cfg(LOCKS)),
        tokens=await _bucket(js, cfg(TOKENS)),
    )
    await _ensure_stream(
        js,
        StreamConfig(
            name=DECISIONS_STREAM,
            subjects=[DECISIONS_SUBJECTS],
            retention=RetentionPolicy.LIMITS,
            storage=file,
            num_replicas=r,
            duplicate_window=120,
            metadata={PARTITIONS_METADATA: str(partitions)},
        ),
    )
    await _ensure_stream(
        js,
        StreamConfig(
            name=RUNS_STREAM,
            subjects=[RUNS_SUBJECTS],
            retention=RetentionPolicy.INTEREST,
            storage=file,
            num_replicas=r,
            max_age=RUNS_MAX_AGE,
            duplicate_window=120,
        ),
    )
    await _ensure_stream(
        js,
        StreamConfig(
            name=RESULTS_STREAM,
            subjects=[RESULTS_SUBJECTS],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=file,
            num_replicas=r,
            max_age=7 * 86_400,
            duplicate_window=120,
        ),
    )
    await _ensure_stream(
        js,
        StreamConfig(
            name=OUTPUT_STREAM,
            subjects=[OUTPUT_SUBJECTS],
            retention=RetentionPolicy.LIMITS,
            discard=DiscardPolicy.OLD,
            storage=file,
            num_replicas=r,
            max_age=limits.output_max_age,
            max_bytes=limits.output_max_bytes,
        ),
    )
    await _ensure_stream(
        js,
        StreamConfig(
            name=TRIGGERS_STREAM,
            subjects=[STORED_TRIGGERS],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=file,
            num_replicas=r,
            max_age=86_400,
            duplicate_window=120,
        ),
    )
    await _ensure_stream(
        js,
        StreamConfig(
            name=AUDIT_STREAM,
            subjects=[AUDIT_SUBJECT_PREFIX + ">"],
            retention=RetentionPolicy.LIMITS,
            discard=DiscardPolicy.OLD,
            storage=file,
            num_replicas=r,
            max_age=limits.audit_max_age,
            max_bytes=limits.audit_max_bytes,
            duplicate_window=120,
        ),
    )
    return buckets


async def cluster_partitions(js: JetStreamContext) -> int:
    """The partition count the cluster was created with (1: created before partitions existed)."""
    info = await with_retry(lambda: js.stream_info(DECISIONS_STREAM), what="decision stream")
    return int((info.config.metadata or {}).get(PARTITIONS_METADATA, "1"))


async def _stream_exists(js: JetStreamContext, name: str) -> bool:
    try:
        await js.stream_info(name)
    except NotFoundError:
        return False
    return True


async def _ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    name = str(config.name)
    try:
        await js.stream_info(name)
        return
    except NotFoundError:
        pass
    try:
        await with_retry(lambda: js.add_stream(config), what="stream create")
    except BadRequestError:
        await js.stream_info(name)
