"""Campaigning for the lease and holding it.

While this server holds the lease, `lead()` runs inside a cancel scope. The scope is cancelled as soon as a
renewal fails for good or the lease's safe lifetime runs out without a successful renewal, so a paused or
partitioned leader stops dispatching before anyone else can take over.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import anyio
from anyio.abc import TaskStatus

from dkron_nats.kv.typed import TRANSIENT, with_retry
from dkron_nats.kv.watch import next_entry
from dkron_nats.kv.watch import stop as stop_watch
from dkron_nats.leader.lease import LEASE_KEY, Lease
from dkron_nats.metrics import LEADER, LEASE_FAILURES, LEASE_RENEWALS
from dkron_nats.timefmt import utcnow

logger = logging.getLogger(__name__)


async def run_elections(
    lease: Lease,
    lead: Callable[[], Awaitable[None]],
    *,
    poll_interval: float = 1.0,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    task_status.started()
    watcher = await with_retry(lambda: lease.kv.watch(LEASE_KEY), attempts=60, what="lease watch")
    expires = time.monotonic() + lease.ttl  # of the holder's latest write seen (at the latest)
    try:
        while True:
            if await _campaign(lease):
                logger.info("%s is now the leader (fence %d)", lease.node, lease.fence)
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
                continue
            # Wake early when the holder releases the lease (graceful stop), and try again right when
            # its latest renewal runs out (a dead holder): then every 0.1 s until the server expires it.
            until_expiry = expires + 0.05 - time.monotonic()
            with anyio.move_on_after(min(poll_interval, until_expiry if until_expiry > 0 else 0.1)):
                while True:
                    entry = await next_entry(watcher, None)
                    if entry is not None and entry.operation in ("DEL", "PURGE"):
                        break
                    if entry is not None:
                        expires = time.monotonic() + lease.ttl
    finally:
        with anyio.move_on_after(2, shield=True):
            await stop_watch(watcher)


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
