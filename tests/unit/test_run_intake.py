"""The run intake's credit: it never waits for a pull that will not come."""

from __future__ import annotations

from typing import Any, cast

import pytest

from dkron_nats.agent.intake import LOST_AFTER, PULL_EXPIRES, RunPuller

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Connection:
    """What the intake asks of its NATS connection: an inbox, its reconnects, and pull requests sent."""

    def __init__(self) -> None:
        self.stats = {"reconnects": 0}
        self.pulls: list[bytes] = []

    def new_inbox(self) -> str:
        return "_INBOX.n1"

    async def publish(self, subject: str, body: bytes, reply: str) -> None:
        self.pulls.append(body)


async def test_a_pull_lost_with_its_server_is_written_off_once_expired(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The NATS server holding a pull dies (a node kill in a cluster): no status ever ends the pull. Once it
    has expired, its credit must come back, or the agent never asks again (in a cluster test an agent took
    nothing for five minutes after a NATS node was killed)."""
    now = [1000.0]
    monkeypatch.setattr("dkron_nats.agent.intake.time.monotonic", lambda: now[0])
    nc = Connection()
    puller = RunPuller(cast(Any, nc), cast(Any, None), "n1", room=lambda: 10)
    await puller.top_up()
    assert nc.pulls == [b'{"batch":10,"expires":5000000000}']
    await puller.top_up()
    assert len(nc.pulls) == 1, "asked again while the first pull may still deliver"
    now[0] += PULL_EXPIRES + LOST_AFTER + 0.1  # nothing delivered, no status: the pull is lost
    await puller.top_up()
    assert len(nc.pulls) == 2, "the lost pull's credit never came back"
    assert puller.credit == 10
