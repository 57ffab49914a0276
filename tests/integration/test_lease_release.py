"""Releasing a lease that another server has taken over meanwhile changes nothing and ends nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

from dkron_nats.kv.typed import delete_at
from dkron_nats.leader.lease import Lease
from dkron_nats.leader.partitions import Ownership
from dkron_nats.timefmt import utcnow
from tests.jetstream import jetstream


def test_a_holder_whose_lease_was_taken_over_releases_nothing_and_goes_on(tmp_path: Path) -> None:
    """Seen in CI: a server handing a partition over while another took it over from it (it looked gone)
    raised "wrong last sequence" (10164) from its release, and that ended the server."""

    async def scenario() -> tuple[bool, str]:
        async with jetstream(tmp_path) as stores:
            kv = stores.buckets.leader
            old = Lease(kv, "s1", "one", ttl=60, key="scheduler.3")
            new = Lease(kv, "s2", "two", ttl=60, key="scheduler.3")
            assert await old.try_acquire(utcnow())
            assert await new.steal(old.revision, utcnow())
            stale = await delete_at(kv, "scheduler.3", old.revision)
            await old.release()  # must not raise
            holder = await new.holder()
            return stale, holder.node if holder else ""

    stale, holder = asyncio.run(scenario())
    assert stale is False, "a delete at a revision that moved on succeeded"
    assert holder == "s2", "the old holder's release removed the new holder's lease"
    assert Ownership().campaign_delay() == 0


def test_a_release_after_a_renewal_whose_answer_was_lost_still_frees_the_lease(tmp_path: Path) -> None:
    """Seen in the join/leave test: a holder handing a partition over released at the revision it knew,
    while its last renewal had landed (its answer lost to the cancelled renewer). The delete was refused,
    the lease stayed, and the assignee waited out the TTL: 10 s of late slots."""

    async def scenario() -> str | None:
        async with jetstream(tmp_path) as stores:
            kv = stores.buckets.leader
            lease = Lease(kv, "s1", "one", ttl=60, key="scheduler.1")
            assert await lease.try_acquire(utcnow())
            known = lease.revision
            assert await lease.renew(utcnow())
            lease.revision = known  # the renewal landed, but this holder never learned its revision
            await lease.release()
            holder = await Lease(kv, "s2", "two", ttl=60, key="scheduler.1").holder()
            return holder.node if holder else None

    assert asyncio.run(scenario()) is None, "the lease outlived its holder's release"
