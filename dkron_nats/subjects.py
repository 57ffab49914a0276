"""Every NATS subject dkron-nats uses, built in one place from validated tokens only."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from dkron_nats.names import is_token

LEADER_RUN = "dkron.leader.run"
"""Manual runs: any server asks the leader to launch a job now (request/reply)."""

AGENT_BUSY = "dkron.agent.busy"
"""Scatter-gather: every agent answers with its running executions."""

AGENT_CANCEL = "dkron.agent.cancel"
"""Broadcast: every agent stops its running executions of the named launch (`CancelLaunch`)."""

DECISIONS_SUBJECTS = "dkron.decisions.>"
"""The leader's decision logs, one subject per partition (leader/decisions.py); only servers write them."""

LEADER_RESULT_NODE = "scheduler"
"""The pseudo-node under which the leader publishes records it makes itself (missed, skipped, failed)."""


def _token(text: str) -> str:
    if not is_token(text):
        raise ValueError(f"{text!r} cannot be a NATS subject token")
    return text


def presence_subject(node: str, incarnation: str) -> str:
    """Answered by a server's NATS connection while it lives: no responders there means the process (or its
    connection) is gone, which lets the next leader take over at once (leader/election.py)."""
    return f"dkron.presence.{_token(node)}.{_token(incarnation)}"


RUNS_SUBJECTS = "dkron.run.>"
"""Run requests, stored in the stream DKRON_RUNS until every agent they are for has taken them."""

MAX_TAG_FILTERS = 256
"""Beyond this many subsets of its tags, an agent's consumer takes every tag subject of its region and the
agent drops what does not match (2^8: eight targetable tags are enumerated exactly)."""


def run_subject(node: str) -> str:
    """Run requests for one named node only: a retry or a re-send to the node that already claimed."""
    return f"dkron.run.node.{_token(node)}"


def tags_subject(region: str, tags: dict[str, str]) -> str:
    """Run requests for the nodes of `region` that have `tags`, in canonical (sorted key) order:
    `{"role": "web", "dc": "dc1"}` -> `dkron.run.tags.global.dc.dc1.role.web`."""
    tokens = [_token(region)]
    for key in sorted(tags):
        if key != "region":  # the first token says it already (a job of another region has no target)
            tokens += [_token(key), _token(tags[key])]
    return "dkron.run.tags." + ".".join(tokens)


def agent_run_filters(node: str, region: str, tags: dict[str, str]) -> list[str]:
    """The subjects one agent takes run requests from: its own node subject and the tag subject of every
    subset of its tags (a job's tags must all be among the node's), or, with too many tags for that, every
    tag subject of its region."""
    # Only tags a job can name are in a subject (a job's tags are tokens; `version` is not).
    keys = sorted(k for k, v in tags.items() if is_token(k) and is_token(v))
    if 2 ** len(keys) > MAX_TAG_FILTERS:
        return [run_subject(node), f"dkron.run.tags.{_token(region)}.>"]
    subsets = [
        {key: tags[key] for i, key in enumerate(keys) if mask >> i & 1} for mask in range(2 ** len(keys))
    ]
    return [run_subject(node), *(tags_subject(region, subset) for subset in subsets)]


def run_consumer(node: str) -> str:
    """The durable consumer of DKRON_RUNS one agent pulls from (servers create it from its member record)."""
    return f"run-{_token(node)}"


def result_subject(node: str, partition: int | None = None) -> str:
    """Where `node` publishes finished executions: of one partition's owner (`partition`), or of the only
    leader of a cluster with one partition (None)."""
    if partition is None:
        return f"dkron.result.{_token(node)}"
    return f"dkron.result.{_token(node)}.{partition}"


def result_node(subject: str) -> str:
    """The node a result subject belongs to (NATS permissions let only that node's user publish there)."""
    return subject.split(".")[2]


def partition_of(job_key: str, count: int) -> int:
    """The partition a job belongs to: a stable hash of its key (the same on every server and version)."""
    return zlib.crc32(job_key.encode()) % count


@dataclass(frozen=True, slots=True)
class Partition:
    """One partition of the job space, and the names its owner uses.

    With one partition (a cluster created with `--partitions 1`, or by a version before partitions) every
    name is the unpartitioned one of before, so such a cluster's stored data and consumers stay as they are.
    """

    index: int = 0
    count: int = 1

    @property
    def split(self) -> bool:
        return self.count > 1

    @property
    def tag(self) -> int | None:
        """What a run request names as its partition (None: the cluster has only one)."""
        return self.index if self.split else None

    def owns(self, job_key: str) -> bool:
        return not self.split or partition_of(job_key, self.count) == self.index

    @property
    def lease_key(self) -> str:
        return lease_key(self.tag)

    def result_subject(self, node: str) -> str:
        return result_subject(node, self.tag)

    @property
    def results_filter(self) -> str:
        return f"dkron.result.*.{self.index}" if self.split else "dkron.result.>"

    def durable(self, name: str) -> str:
        """This owner's name for a durable consumer (`name` itself with one partition)."""
        return f"{name}-{self.index}" if self.split else name

    def trigger_subject(self, job_key: str) -> str:
        """Where a NATS trigger waits for this partition's owner to launch it."""
        if self.split:
            return f"dkron.triggered.{self.index}.{_token(job_key)}"
        return f"dkron.triggered.{_token(job_key)}"

    @property
    def triggers_filter(self) -> str:
        return f"dkron.triggered.{self.index}.*" if self.split else "dkron.triggered.>"

    @property
    def manual_runs(self) -> str:
        """Manual runs of this partition's jobs, served by its owner only (request/reply)."""
        return f"{LEADER_RUN}.{self.index}" if self.split else LEADER_RUN


ONLY_PARTITION = Partition()
"""The partition of a cluster that has one: every name as it was before partitions."""


def lease_key(partition: int | None) -> str:
    """The KV key of a partition's lease in the leader bucket (`scheduler` with one partition)."""
    return "scheduler" if partition is None else f"scheduler.{partition}"


def lease_partition(key: str) -> int:
    """The partition a lease key is of (`lease_key`'s inverse)."""
    return int(key.rpartition(".")[2]) if "." in key else 0


def partitions(count: int) -> list[Partition]:
    return [Partition(index, count) for index in range(count)]


def partition_for(job_key: str, count: int) -> Partition:
    return Partition(partition_of(job_key, count), count)


ALL_DECISIONS = "dkron.decisions.*"


def decisions_subject(partition: int) -> str:
    return f"dkron.decisions.{partition}"
