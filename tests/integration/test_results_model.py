"""A Hypothesis state machine of results, "agent lost" verdicts and takeovers against a real nats-server.

Agents claim executions and report them; the leader rules some of them lost (its verdict races the agent's
own result); results are delivered again (a leader died before its ack); a compromised agent reports another
node's execution; leaders take over with fresh caches. Results are applied as the results consumer applies
them (`ResultProcessor._handle`, one job's in stream order). After every step: each execution is counted
exactly once, as the first of its outcomes to be applied (the agent's result or the verdict, never both),
its stored record is that outcome, and a forged or repeated result changes nothing.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import msgspec
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
)

from dkron_nats.kv.executions import execution_id
from dkron_nats.kv.typed import TypedKV
from dkron_nats.models import Execution, ExecutionResult, JobSpec, JobState, Member
from dkron_nats.names import job_key
from dkron_nats.subjects import LEADER_RESULT_NODE, result_subject
from dkron_nats.timefmt import utcnow
from tests.integration.test_result_faults import AGENTS, Cluster, Leader, _save, _server, _take_lease
from tests.jetstream import jetstream
from tests.statemachines import run_against_real_server

NODES = AGENTS  # agent-1, agent-2


class Shared:
    """One nats-server for every example; each example has jobs of its own."""

    def __init__(self, portal: BlockingPortal, cluster: Cluster) -> None:
        self.portal, self.cluster = portal, cluster
        self.examples = itertools.count(1)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    with (
        start_blocking_portal("asyncio") as portal,
        portal.wrap_async_context_manager(jetstream(tmp_path_factory.mktemp("results"))) as started,
    ):
        cluster = Cluster(started.nc, started.js, started.buckets)
        members = TypedKV(started.buckets.members, Member)
        for name in NODES:
            member = Member(
                name=name,
                addr="127.0.0.1",
                port=1,
                tags={},
                server=False,
                version="test",
                started_at=utcnow(),
            )
            portal.call(members.put, name, member)
        yield Shared(portal, cluster)


@dataclass
class Claimed:
    """An execution an agent claimed, and the outcome the model expects to have been counted for it."""

    execution: Execution
    revision: int
    counted: str = ""
    """"" (still running), "success", "failed" (the agent's result) or "lost" (the leader's verdict)."""


@dataclass(frozen=True)
class Sent:
    """A result as it sits in the results stream: what a redelivery applies again."""

    result: ExecutionResult
    seq: int
    subject: str


class ResultsAndVerdicts(RuleBasedStateMachine):
    shared: Shared
    claims = Bundle("claims")
    sent = Bundle("sent")

    def __init__(self) -> None:
        super().__init__()
        example = next(self.shared.examples)
        self.job = f"model-{example}"
        self.portal = self.shared.portal
        self.portal.call(
            _save, self.shared.cluster, JobSpec(name=self.job, schedule="@manual", executor="noop")
        )
        self.leader = self._take_over(f"server-{example}-0")
        self.groups = itertools.count(1)
        self.seqs = itertools.count(1)
        self.claimed: list[Claimed] = []

    def _take_over(self, name: str) -> Leader:
        leader = self.portal.call(_server, self.shared.cluster, name)
        self.portal.call(_take_lease, self.shared.cluster, leader)
        return leader

    def _apply(self, result: ExecutionResult, subject: str, seq: int | None = None) -> Sent:
        sent = Sent(result, seq if seq is not None else next(self.seqs), subject)
        self.portal.call(self.leader.results._handle, sent.result, sent.seq, sent.subject)
        return sent

    @rule(target=claims, node=st.sampled_from(NODES))
    def an_agent_claims(self, node: str) -> Claimed:
        group = next(self.groups)
        running = Execution(
            id=execution_id(group, node),
            job_name=self.job,
            group=group,
            node_name=node,
            started_at=utcnow(),
            status="running",
        )
        revision = self.portal.call(self.shared.cluster.executions.claim, running)
        assert revision is not None
        claimed = Claimed(running, revision)
        self.claimed.append(claimed)
        return claimed

    @rule(target=sent, claimed=claims, success=st.booleans())
    def the_agent_reports(self, claimed: Claimed, success: bool) -> Sent:
        ex = claimed.execution
        done = msgspec.structs.replace(
            ex,
            finished_at=utcnow(),
            success=success,
            status="success" if success else "failed",
            output="ok\n",
        )
        sent = self._apply(
            ExecutionResult(execution=done, claimed_at=claimed.revision), result_subject(ex.node_name)
        )
        if not claimed.counted:
            claimed.counted = "success" if success else "failed"
        return sent

    @rule(target=sent, claimed=claims)
    def the_leader_rules_it_lost(self, claimed: Claimed) -> Sent:
        verdict = claimed.execution.lost("stopped answering", utcnow())
        verdict = msgspec.structs.replace(verdict, claimed_at=claimed.revision)
        sent = self._apply(verdict, result_subject(LEADER_RESULT_NODE))
        if not claimed.counted:
            claimed.counted = "lost"
        return sent

    @rule(sent=sent)
    def a_result_is_delivered_again(self, sent: Sent) -> None:
        self._apply(sent.result, sent.subject, sent.seq)

    @rule(claimed=claims, success=st.booleans())
    def another_agent_forges_its_result(self, claimed: Claimed, success: bool) -> None:
        ex = claimed.execution
        forger = next(n for n in NODES if n != ex.node_name)
        done = msgspec.structs.replace(ex, finished_at=utcnow(), success=success, status="success")
        self._apply(ExecutionResult(execution=done, claimed_at=claimed.revision), result_subject(forger))

    @rule(claimed=consumes(claims))
    def the_execution_is_forgotten(self, claimed: Claimed) -> None:
        """No more outcomes for it (keeps the bundle small); it stays in the model's counts."""

    @rule()
    def another_server_takes_over(self) -> None:
        self.leader = self._take_over(f"server-{self.job}-{next(self.seqs)}")

    @invariant()
    def each_execution_is_counted_once_as_its_first_outcome(self) -> None:
        cluster = self.shared.cluster
        found = self.portal.call(TypedKV(cluster.buckets.job_state, JobState).get, job_key(self.job))
        state = found[0] if found else JobState()
        counted = [c.counted for c in self.claimed if c.counted]
        assert state.success_count == counted.count("success"), "successes counted"
        assert state.error_count == counted.count("failed") + counted.count("lost"), "failures counted"
        for claimed in self.claimed:
            ex = claimed.execution
            stored = self.portal.call(cluster.executions.get, ex.job_name, ex.id)
            assert stored is not None
            if not claimed.counted:
                assert stored.status == "running", f"{ex.id}: {stored.status} with no outcome applied"
            else:
                expected = "failed" if claimed.counted == "lost" else claimed.counted
                assert stored.status == expected, f"{ex.id}: {stored.status}, counted as {claimed.counted}"
                verdict = "agent lost" in stored.output
                assert verdict == (claimed.counted == "lost"), (
                    f"{ex.id}: the stored record is not its first outcome"
                )


def test_every_execution_is_counted_once_whatever_the_order_of_results_verdicts_and_takeovers(
    shared: Shared,
) -> None:
    ResultsAndVerdicts.shared = shared
    run_against_real_server(ResultsAndVerdicts)
