"""The member heartbeat on a real nats-server: a new execution is listed at once, not a heartbeat later.

A partition's owner learns what a dead agent was running from the agent's last record (and from what it
sent itself). A run its previous owner sent is known to the new owner only through that record, so the
record must list the run as soon as the agent claims it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import anyio
import nats
import pytest
from nats.js.api import KeyValueConfig

from dkron_nats.kv.typed import TypedKV
from dkron_nats.kv.watch import ORDERED_HEARTBEAT, stop
from dkron_nats.members import EARLY_BEAT, Pulse, heartbeat
from dkron_nats.models import Member
from dkron_nats.natsserver import EmbeddedNats
from tests.harness import free_port

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def members(tmp_path: Path) -> AsyncIterator[TypedKV[Member]]:
    async with EmbeddedNats(tmp_path, f"127.0.0.1:{free_port()}", "solo") as server:
        nc = await nats.connect(server.url)
        try:
            kv = await nc.jetstream().create_key_value(KeyValueConfig(bucket="members"))
            yield TypedKV(kv, Member)
        finally:
            await nc.close()


async def _listed(store: TypedKV[Member], key: str, within: float) -> float:
    started = time.monotonic()
    with anyio.fail_after(within):
        while True:
            found = await store.get("agent-1")
            if found is not None and key in found[0].running:
                return time.monotonic() - started
            await anyio.sleep(0.01)


async def test_a_claimed_execution_is_listed_at_once_and_a_burst_shares_a_record(
    members: TypedKV[Member],
) -> None:
    running: list[str] = []
    pulse = Pulse()
    sent = 0

    def record() -> Member:
        nonlocal sent
        sent += 1
        return Member(
            name="agent-1",
            addr="127.0.0.1",
            port=1,
            tags={},
            server=False,
            version="test",
            started_at=datetime.now(UTC),
            running=list(running),
        )

    async with anyio.create_task_group() as tg:
        await tg.start(
            lambda task_status: heartbeat(members, record, 60.0, early=pulse, task_status=task_status)
        )
        running.append("job.1")
        pulse.now()
        assert await _listed(members, "job.1", within=1.0) < 0.5  # the interval is 60 s
        before = sent
        for n in range(2, 50):  # a burst of claims
            running.append(f"job.{n}")
            pulse.now()
        await _listed(members, "job.49", within=1.0)
        assert sent - before <= 2, "a burst of claims is one or two records, not one each"
        await anyio.sleep(2 * EARLY_BEAT)  # quiet for a while, then one more
        running.append("job.late")
        pulse.now()
        assert await _listed(members, "job.late", within=1.0) < 0.5
        tg.cancel_scope.cancel()


async def test_a_kv_watch_notices_a_lost_consumer_within_two_seconds(members: TypedKV[Member]) -> None:
    """A watch's consumer lives on one nats-server; when that server leaves, nats-py remakes it only after
    two missed idle heartbeats. Asked for one a second (nats-py's watch asks for 5 s: 10 s deaf)."""
    watcher = await members.kv.watchall()
    try:
        sub = watcher._sub
        assert sub is not None
        info = await sub.consumer_info()
        assert info.config.idle_heartbeat == ORDERED_HEARTBEAT
        assert ORDERED_HEARTBEAT <= 1.0
    finally:
        await stop(watcher)
