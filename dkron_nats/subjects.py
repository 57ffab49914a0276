"""Every NATS subject dkron-nats uses, built in one place from validated tokens only."""

from __future__ import annotations

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


def run_subject(node: str) -> str:
    """Run requests for one node; its agent subscribes in a queue group named after the node."""
    return f"dkron.run.node.{_token(node)}"


def result_subject(node: str) -> str:
    return f"dkron.result.{_token(node)}"


def decisions_subject(partition: int) -> str:
    return f"dkron.decisions.{partition}"
