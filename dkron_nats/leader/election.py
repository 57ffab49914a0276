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
from nats.js.kv import KeyValue

from dkron_nats.kv.typed import TRANSIENT, with_retry
from dkron_nats.kv.watch import next_entry
from dkron_nats.kv.watch import stop as stop_watch
from dkron_nats.leader.lease import Lease, LeaseRecord
from dkron_nats.leader.partitions import Ownership
from dkron_nats.leader.presence import PROBE_INTERVAL, Absence, Absences
from dkron_nats.metrics import LEADER, LEASE_FAILURES, LEASE_RENEWALS, PARTITION_OWNED, PARTITIONS_OWNED
from dkron_nats.models import decode
from dkron_nats.subjects import lease_partition
from dkron_nats.timefmt import utcnow

logger = logging.getLogger(__name__)
HAND_OVER_CHECK = 0.5


async def run_elections(
    lease: Lease,
    lead: Callable[[], Awaitable[None]],
    *,
    absences: Absences | None = None,
    poll_interval: float = 1.0,
    on_gone: Callable[[str], None] = lambda node: None,
    ownership: Ownership | None = None,
) -> None:
    """Campaign for the lease and lead while holding it, as `ownership` allows (by default: always).

    With `absences`, while another server holds the lease this one asks that holder's presence subject (served
    by `Presence`): a holder confirmed gone (its process killed) has its lease taken over at once instead
    of when it expires, and `on_gone` learns its node's name before this server leads."""
    own = ownership or Ownership()
    watcher = await with_retry(lambda: lease.kv.watch(lease.key), attempts=60, what="lease watch")
    expires = time.monotonic() + lease.ttl  # of the holder's latest write seen (at the latest)
    holder: Holder | None = None
    free_since: float | None = time.monotonic()  # not known yet: as good as just freed
    campaign_at = 0.0  # now
    try:
        while True:
            won = False
            delay = own.campaign_delay()
            if time.monotonic() >= campaign_at and _free_for(free_since) >= delay:
                campaign_at = time.monotonic() + poll_interval
                won = await _campaign(lease)
            if won or await _steal(lease, holder, on_gone, own):
                holder, campaign_at = None, 0.0
                logger.info("%s now holds %s (fence %d)", lease.node, lease.key, lease.fence)
                own.took()
                await _lead(lease, lead, own)
                free_since = time.monotonic()
                continue
            # Wake early when the holder releases the lease (graceful stop), and try again right when
            # its latest renewal runs out (a dead holder): then every 0.1 s until the server expires it.
            # Meanwhile ask the holder whether it is there, every PROBE_INTERVAL.
            until_expiry = expires + 0.05 - time.monotonic()
            wait = min(poll_interval, until_expiry if until_expiry > 0 else 0.1)
            if holder is not None:
                wait = min(wait, PROBE_INTERVAL)
            if free_since is not None and delay > 0:
                wait = max(0.01, min(wait, free_since + delay - time.monotonic()))
            with anyio.move_on_after(wait):
                while True:
                    entry = await next_entry(watcher, None)
                    if entry is not None and entry.operation in ("DEL", "PURGE"):
                        holder, campaign_at, free_since = None, 0.0, time.monotonic()
                        break
                    if entry is not None:
                        expires = time.monotonic() + lease.ttl
                        holder, free_since = Holder.of(entry, lease, absences), None
            if time.monotonic() >= expires:
                campaign_at = 0.0
                free_since = expires if free_since is None else free_since
    finally:
        with anyio.move_on_after(2, shield=True):
            await stop_watch(watcher)


def _free_for(free_since: float | None) -> float:
    """How long the lease has been free as far as this server knows (0 while it is held)."""
    return 0.0 if free_since is None else time.monotonic() - free_since


async def _lead(lease: Lease, lead: Callable[[], Awaitable[None]], own: Ownership) -> None:
    partition = lease_partition(lease.key)
    first = partition == 0  # "the leader" of Dkron's API
    if first:
        LEADER.set(1)
    PARTITIONS_OWNED.inc()
    owned = PARTITION_OWNED.labels(str(partition))
    owned.set(1)
    try:
        await _hold(lease, lead, own)
    except Exception:
        # The supervisor boundary: a failing leader session demotes this server, it does not
        # stop it. Another server (or this one, after a pause) takes over.
        logger.exception("the leader session of %s failed; stepping down", lease.node)
        await anyio.sleep(1.0)
    finally:
        with anyio.move_on_after(2, shield=True):
            await lease.release()
        if first:
            LEADER.set(0)
        PARTITIONS_OWNED.dec()
        owned.set(0)
        logger.info("%s is no longer the leader", lease.node)


@dataclass
class Holder:
    """Another server holding the lease, as of its latest write seen, and its presence."""

    record: LeaseRecord
    revision: int
    absence: Absence

    @staticmethod
    def of(entry: KeyValue.Entry, lease: Lease, absences: Absences | None) -> Holder | None:
        if absences is None or not entry.value:
            return None
        try:
            record = decode(entry.value, LeaseRecord)
        except msgspec.DecodeError:
            return None
        if record.node == lease.node and record.incarnation == lease.incarnation:
            return None  # this very process (a lease it just lost): nothing to ask
        absence = absences.of(record.node, record.incarnation)
        absence.heard_from()
        return Holder(record, int(entry.revision or 0), absence)


async def _steal(lease: Lease, holder: Holder | None, on_gone: Callable[[str], None], own: Ownership) -> bool:
    """Take the lease over from a holder confirmed gone; False while it is there (or another was faster,
    or another server is the one to take it over)."""
    if holder is None or not await holder.absence.confirmed():
        return False
    confirmed_for = holder.absence.confirmed_for()
    if not own.may_steal(holder.record.node, confirmed_for):
        return False
    gone = holder.record
    if not await lease.steal(holder.revision, utcnow()):
        return False
    logger.warning(
        "took the lease over from %s at once: its NATS connection is gone (process %s, confirmed %.2fs ago)",
        gone.node,
        gone.incarnation,
        confirmed_for,
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


async def _hold(lease: Lease, lead: Callable[[], Awaitable[None]], own: Ownership) -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(_keep_renewed, lease, tg.cancel_scope)
        tg.start_soon(_hand_over_when_asked, lease, own, tg.cancel_scope)
        await lead()
        tg.cancel_scope.cancel()


async def _hand_over_when_asked(lease: Lease, own: Ownership, scope: anyio.CancelScope) -> None:
    """End this term (stop, then release: `_lead`) once the lease is better held by another server."""
    while True:  # a registry change can make it so: looked at on a timer, not on an event
        await anyio.sleep(HAND_OVER_CHECK)
        if own.hand_over():
            break
    logger.info("%s hands %s over to its assignee", lease.node, lease.key)
    scope.cancel()


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
