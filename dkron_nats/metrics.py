"""Prometheus metrics of this process, served at `/metrics` in the text format.

Dkron's two execution counters keep their names so existing dashboards work; the rest are dkron-nats's own.
Every server exposes what it saw: the leader counts executions, slots and dispatches, each node its own
running executions and NATS reconnects, so a dashboard sums over the servers.

An agent (a node without `--server`) records only its own series: `dkron_executions_running`,
`dkron_execution_slots`, `dkron_executions_queued`, `dkron_execution_seconds`, the NATS connection counters
and the process's; it serves them on its `--http-addr` listener (`http/agent_app.py`). Their labels hold no
job names, since that listener has no authentication.

What an execution costs is read from two counters every node exports: `dkron_nats_messages_total` (messages
through this node's NATS connection, by direction) and `process_cpu_seconds_total` (the process collector's
user + system time). Divided by the executions counted in the same interval (`dkron_job_executions_*` on
the leader, `dkron_execution_seconds_count` on an agent), they give messages and CPU per execution.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, Metric

disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` twin per counter
REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)

_LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

EXECUTIONS_SUCCEEDED = Counter(
    "dkron_job_executions_succeeded",
    "Executions that finished successfully (Dkron's series).",
    ["job_name"],
    registry=REGISTRY,
)
EXECUTIONS_FAILED = Counter(
    "dkron_job_executions_failed",
    "Executions that finished with a failure (Dkron's series).",
    ["job_name"],
    registry=REGISTRY,
)
SLOTS_MISSED = Counter(
    "dkron_slots_missed",
    "Scheduled slots not launched (downtime, takeover, pause; the job's misfire policy).",
    ["job_name"],
    registry=REGISTRY,
)
SLOTS_SKIPPED = Counter(
    "dkron_slots_skipped",
    "Slots and dependent runs skipped because the previous run was still going (concurrency forbid).",
    ["job_name"],
    registry=REGISTRY,
)
SCHEDULE_LAG = Histogram(
    "dkron_schedule_lag_seconds",
    "From a slot's scheduled instant to the start of its execution on the agent.",
    buckets=_LAG_BUCKETS,
    registry=REGISTRY,
)
DISPATCH_SECONDS = Histogram(
    "dkron_dispatch_seconds",
    "Leader: from publishing a run request to its being stored in DKRON_RUNS.",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
_DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0)

EXECUTION_SECONDS = Histogram(
    "dkron_execution_seconds",
    "Agent: how long its executor took per execution, by executor and result (success or failure).",
    ["executor", "result"],
    buckets=_DURATION_BUCKETS,
    registry=REGISTRY,
)
RUNNING = Gauge(
    "dkron_executions_running",
    "Executions this node's agent is running now.",
    registry=REGISTRY,
)
EXECUTION_SLOTS = Gauge(
    "dkron_execution_slots",
    "This node's execution slots: limit (--max-concurrent-executions, 0: no limit) and used.",
    ["state"],
    registry=REGISTRY,
)
EXECUTIONS_QUEUED = Gauge(
    "dkron_executions_queued",
    "Executions this node's agent has taken that wait for a free execution slot.",
    registry=REGISTRY,
)
DECISIONS = Counter(
    "dkron_decisions",
    "Scheduling decisions (a job's new launch cursor) this server appended to a partition's decision log.",
    ["partition"],
    registry=REGISTRY,
)
DECISION_APPENDS = Counter(
    "dkron_decision_appends",
    "Appends to the decision log; decisions made while one is in flight share the next (decisions / appends "
    "is the group commit's batch size).",
    ["partition"],
    registry=REGISTRY,
)
LEADER = Gauge(
    "dkron_leader", "1 while this server is the leader (the owner of partition 0).", registry=REGISTRY
)
PARTITIONS_OWNED = Gauge(
    "dkron_partitions_owned", "Partitions of the job space this server schedules now.", registry=REGISTRY
)
PARTITION_OWNED = Gauge(
    "dkron_partition_owned", "1 while this server owns the partition.", ["partition"], registry=REGISTRY
)
LEASE_RENEWALS = Counter("dkron_lease_renewals", "Leader lease renewals that succeeded.", registry=REGISTRY)
LEASE_FAILURES = Counter(
    "dkron_lease_renewal_failures",
    "Leader lease renewals that failed (a step-down follows when they go on failing).",
    registry=REGISTRY,
)
NATS_RECONNECTS = Counter(
    "dkron_nats_reconnects", "Times this node's NATS connection was re-established.", registry=REGISTRY
)
NATS_DISCONNECTS = Counter(
    "dkron_nats_disconnects", "Times this node's NATS connection was lost.", registry=REGISTRY
)


ConnectionStats = Callable[[], Mapping[str, int]]
"""Reads a NATS client's running totals (nats-py's `Client.stats`: in_msgs, out_msgs, in_bytes, out_bytes)."""


class NatsTraffic:
    """Messages and bytes through this node's NATS connection, read from the client's own totals when
    scraped: counting costs nothing per message, and a scrape sees the figures of that instant."""

    def __init__(self) -> None:
        self._read: ConnectionStats | None = None

    def follow(self, read: ConnectionStats) -> None:
        """Export the totals `read` returns from now on (the node's one connection)."""
        self._read = read

    def describe(self) -> list[Metric]:
        return list(self._families({}))

    def collect(self) -> Iterator[Metric]:
        yield from self._families(self._read() if self._read is not None else {})

    @staticmethod
    def _families(stats: Mapping[str, int]) -> Iterator[Metric]:
        for name, unit, what in (("messages", "msgs", "messages"), ("bytes", "bytes", "payload bytes")):
            family = CounterMetricFamily(
                f"dkron_nats_{name}",
                f"NATS {what} through this node's connection: in (received), out (published).",
                labels=["direction"],
            )
            for direction in ("in", "out") if stats else ():
                family.add_metric([direction], stats.get(f"{direction}_{unit}", 0))
            yield family


NATS_TRAFFIC = NatsTraffic()
REGISTRY.register(NATS_TRAFFIC)


def exposition() -> bytes:
    """Every series in the Prometheus text format."""
    return generate_latest(REGISTRY)
