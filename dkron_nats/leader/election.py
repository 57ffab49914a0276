"""Campaigning for the lease and holding it.

While this server holds the lease, `lead()` runs inside a cancel scope. The scope is cancelled as soon as a
renewal fails for good or the lease's safe lifetime runs out without a successful renewal, so a paused or
partitioned leader stops dispatching before anyone else can take over.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
import msgspec
from anyio.abc import TaskStatus
from nats.aio.client import Client
from nats.js.kv import KeyValue

from dkron_nats.kv.typed import TRANSIENT, with_retry
from dkron_nats.kv.watch import next_entry
from dkron_nats.kv.watch import stop as stop_watch
from dkron_nats.leader.lease import LEASE_KEY, Lease, LeaseRecord
from dkron_nats.leader.presence import PROBE_INTERVAL, Absence, Presence
from dkron_nats.metrics import LEADER, LEASE_FAILURES, LEASE_RENEWALS
from dkron_nats.models import decode
from dkron_nats.timefmt import utcnow

logger = logging.getLogger(__name__)


async def run_elections(
    lease: Lease,
    lead: Callable[[], Awaitable[None]],
    *,
    nc: Client | None = None,
    poll_interval: float = 1.0,
    on_gone: Callable[[str], None] = lambda node: None,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Campaign for the lease and lead while holding it. With `nc`, this server answers on its presence
    subject, and while another server holds the lease it asks that holder's: a holder confirmed gone (its
    process killed) has its lease taken over at once instead of when it expires, and `on_gone` learns its
    node's name before this server leads."""
    async with anyio.create_task_group() as tg:
        if nc is not None:
            await tg.start(Presence(nc, lease.node, lease.incarnation).serve)
        task_status.started()
        await _elections(lease, lead, nc, poll_interval, on_gone)
        tg.cancel_scope.cancel()


async def _elections(
    lease: Lease,
    lead: Callable[[], Awaitable[None]],
    nc: Client | None,
    poll_interval: float,
    on_gone: Callable[[str], None],
) -> None:
    watcher = await with_retry(lambda: lease.kv.watch(LEASE_KEY), attempts=60, what="lease watch")
    expires = time.monotonic() + lease.ttl  # of the holder's latest write seen (at the latest)
    holder: Holder | None = None
    campaign_at = 0.0  # now
    try:
        while True:
            won = False
            if time.monotonic() >= campaign_at:
                campaign_at = time.monotonic() + poll_interval
                won = await _campaign(lease)
            if won or await _steal(lease, holder, on_gone):
                holder, campaign_at = None, 0.0
                logger.info("%s is now the leader (fence %d)", lease.node, lease.fence)
                await _lead(lease, lead)
                continue
            # Wake early when the holder releases the lease (graceful stop), and try again right when
            # its latest renewal runs out (a dead holder): then every 0.1 s until the server expires it.
            # Meanwhile ask the holder whether it is there, every PROBE_INTERVAL.
            until_expiry = expires + 0.05 - time.monotonic()
            wait = min(poll_interval, until_expiry if until_expiry > 0 else 0.1)
            if holder is not None:
                wait = min(wait, PROBE_INTERVAL)
            with anyio.move_on_after(wait):
                while True:
                    entry = await next_entry(watcher, None)
                    if entry is not None and entry.operation in ("DEL", "PURGE"):
                        holder, campaign_at = None, 0.0
                        break
                    if entry is not None:
                        expires = time.monotonic() + lease.ttl
                        holder = Holder.of(entry, lease, nc)
            if time.monotonic() >= expires:
                campaign_at = 0.0
    finally:
        with anyio.move_on_after(2, shield=True):
            await stop_watch(watcher)


async def _lead(lease: Lease, lead: Callable[[], Awaitable[None]]) -> None:
    LEADER.set(1)
    try:
        await _hold(lease, lead)
    except Exception:
        # The supervisor boundary: a failing leader session demotes this server, it does not
        # stop it. Another server (or this one, after a pause) takes over.
        logger.exception("the leader session of %s failed; stepping down", lease.node)
        await anyio.sleep(1.0)
    finally:
        with anyio.move_on_after(2, shield=True):
            await lease.release()
        LEADER.set(0)
        logger.info("%s is no longer the leader", lease.node)


@dataclass
class Holder:
    """Another server holding the lease, as of its latest write seen, and its presence."""

    record: LeaseRecord
    revision: int
    absence: Absence

    @staticmethod
    def of(entry: KeyValue.Entry, lease: Lease, nc: Client | None) -> Holder | None:
        if nc is None or not entry.value:
            return None
        try:
            record = decode(entry.value, LeaseRecord)
        except msgspec.DecodeError:
            return None
        if record.node == lease.node and record.incarnation == lease.incarnation:
            return None  # this very process (a lease it just lost): nothing to ask
        return Holder(record, int(entry.revision or 0), Absence(nc, record.node, record.incarnation))


async def _steal(lease: Lease, holder: Holder | None, on_gone: Callable[[str], None]) -> bool:
    """Take the lease over from a holder confirmed gone; False while it is there (or another was faster)."""
    if holder is None or not await holder.absence.confirmed():
        return False
    gone = holder.record
    if not await lease.steal(holder.revision, utcnow()):
        return False
    logger.warning(
        "took the lease over from %s at once: its NATS connection is gone (process %s)",
        gone.node,
        gone.incarnation,
    )
    if gone.node != lease.node:  # not this node's own previous process: this one is there
        on_gone(gone.node)
    return True


async def _campaign(lease: Lease) -> bool:
    """One try for the lease. Any error only means "not now": it must never end the server."""
    try:
        return await lease.try_acquire(utcnow())
    except Exception:
        logger.exception("campaigning for the lease failed; trying again")
        await anyio.sleep(0.5)
        return False


async def _hold(lease: Lease, lead: Callable[[], Awaitable[None]]) -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(_keep_renewed, lease, tg.cancel_scope)
        await lead()
        tg.cancel_scope.cancel()


async def _keep_renewed(lease: Lease, scope: anyio.CancelScope) -> None:
    interval = lease.ttl / 5
    while True:
        with anyio.move_on_after(max(lease.remaining(), 0.0)) as deadline:
            await anyio.sleep(interval)
            while True:
                try:
                    if not await lease.renew(utcnow()):
                        LEASE_FAILURES.inc()
                        scope.cancel()
                        return
                    LEASE_RENEWALS.inc()
                    break
                except TRANSIENT:
                    LEASE_FAILURES.inc()
                    logger.warning("lease renewal failed (NATS unavailable); retrying")
                    await anyio.sleep(min(0.5, interval))
        if deadline.cancelled_caught:
            logger.error("lease renewal overdue: demoting before the lease can expire")
            lease.revision = lease.term = 0
            scope.cancel()
            return
