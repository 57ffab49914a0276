"""A Hypothesis state machine of decisions and takeovers against a real nats-server.

Leaders take over one after another and every leader, deposed or not, keeps deciding slots of a few jobs in
any interleaving; some appends lose their ack and are resent; checkpoints purge the log all the time. After
every step: a decision is acknowledged only to the newest leader, each job's acknowledged slots only grow, and
the log read afresh (as the next takeover reads it) holds exactly each job's last acknowledged decision, and
the run request that decision stands for is claimed once (a create-only execution record per slot).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

from dkron_nats.errors import LeadershipLostError
from dkron_nats.kv.executions import ExecutionStore, execution_id
from dkron_nats.leader.decisions import DecisionLog, LogTail
from dkron_nats.models import Execution, LaunchCursor
from tests.jetstream import FlakyAcks, JetStream, jetstream
from tests.statemachines import run_against_real_server

JOBS = ("job-a", "job-b", "job-c")


class Shared:
    """One nats-server and connection for every example; each example has its own partition."""

    def __init__(self, portal: BlockingPortal, started: JetStream) -> None:
        self.portal, self.js, self.publisher = portal, started.js, started.publisher
        self.partitions = itertools.count(1)
        self.executions = ExecutionStore(started.buckets.executions, started.js, started.publisher)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    with (
        start_blocking_portal("asyncio") as portal,
        portal.wrap_async_context_manager(jetstream(tmp_path_factory.mktemp("model"))) as started,
    ):
        yield Shared(portal, started)


class Leader:
    def __init__(self, log: DecisionLog, flaky: FlakyAcks, writer: Future[Any]) -> None:
        self.log, self.flaky, self.writer = log, flaky, writer


class DecisionsAndTakeovers(RuleBasedStateMachine):
    shared: Shared

    def __init__(self) -> None:
        super().__init__()
        self.partition = next(self.shared.partitions)
        self.leaders: list[Leader] = []
        self.acked: dict[str, int] = {}
        """Job -> the slot of its last acknowledged decision."""

    def _new_log(self, publisher: Any) -> DecisionLog:
        return DecisionLog(
            self.shared.js,
            publisher,
            ensure_leader=lambda: None,
            partition=self.partition,
            checkpoint_after=3,  # a checkpoint and a purge every few decisions
        )

    @rule()
    def take_over(self) -> None:
        portal = self.shared.portal
        flaky = FlakyAcks(self.shared.publisher)
        log = self._new_log(flaky)
        portal.call(log.open, len(self.leaders) + 1)
        assert {k: c.slot_ns for k, c in log.cursors.items()} == self.acked, "a takeover missed a decision"
        writer, _ = portal.start_task(log.run)
        self.leaders.append(Leader(log, flaky, writer))

    @precondition(lambda self: self.leaders)
    @rule(data=st.data(), job=st.sampled_from(JOBS), lose_ack=st.booleans())
    def decide(self, data: st.DataObject, job: str, lose_ack: bool) -> None:
        index = data.draw(st.integers(0, len(self.leaders) - 1), label="leader")
        leader = self.leaders[index]
        known = leader.log.cursors.get(job)
        slot = (known.slot_ns if known else 0) + 1
        leader.flaky.lose_next = lose_ack
        cursor = LaunchCursor(slot_ns=slot, group=slot, fence=index + 1, targets=["agent-1"])
        try:
            self.shared.portal.call(leader.log.record, job, cursor)
        except LeadershipLostError:
            assert index < len(self.leaders) - 1, "the newest leader was refused"
            return
        assert index == len(self.leaders) - 1, f"leader {index + 1} was acknowledged after a later takeover"
        assert slot > self.acked.get(job, 0), f"{job}: slot {slot} acknowledged after {self.acked[job]}"
        self.acked[job] = slot
        claim = Execution(
            id=execution_id(slot, "agent-1"),
            job_name=f"{job}-{self.partition}",
            group=slot,
            node_name="agent-1",
        )
        claims = [self.shared.portal.call(self.shared.executions.claim, claim) for _ in range(2)]
        assert [c is not None for c in claims] == [True, False], "a decided launch was claimed twice"

    @invariant()
    def the_log_holds_each_jobs_last_acknowledged_decision(self) -> None:
        reader = LogTail(self.shared.js, self.partition)
        # As a takeover reads it, without appending (no fence moves: this is an observer).
        self.shared.portal.call(reader.read_rest)
        assert {k: c.slot_ns for k, c in reader.cursors.items()} == self.acked

    def teardown(self) -> None:
        for leader in self.leaders:
            leader.writer.cancel()


def test_decisions_and_takeovers_keep_every_acknowledged_decision_and_fence_every_older_leader(
    shared: Shared,
) -> None:
    DecisionsAndTakeovers.shared = shared
    run_against_real_server(DecisionsAndTakeovers)
