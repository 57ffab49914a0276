"""The leader lease: one KV key with a TTL; its revision is the fencing token.

Acquire with create-if-absent, renew with compare-and-set on the revision. A holder whose last successful
renewal was sent more than `ttl - margin` ago considers itself demoted, even if it cannot reach NATS: the
server's expiry clock starts after our send time, so this bound needs no clock synchronisation.

The same bucket holds the leader's launch records (`launch.<node>.<job key>.<execution id>`: the SHA-256
of the run request it is about to send). Only servers may write it, and its TTL removes them after a
lease's lifetime, so an agent can tell a run request the leader sent from one anybody else published.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from datetime import datetime

import msgspec
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from dkron_nats.kv.typed import TRANSIENT, delete_at
from dkron_nats.models import decode, encode
from dkron_nats.names import job_key

logger = logging.getLogger(__name__)
LEASE_KEY = "scheduler"


class LeaseRecord(msgspec.Struct, kw_only=True):
    node: str
    incarnation: str
    since: datetime
    term: int = 0
    """The revision at which this holder acquired the lease (0 in the acquiring write itself)."""


def term_of(record: LeaseRecord, revision: int) -> int:
    """The fencing token a lease entry stands for: constant while one holder keeps renewing."""
    return record.term or revision


def launch_key(node: str, job_name: str, exec_id: str) -> str:
    """Where the leader records a run request for `node` before sending it."""
    return f"launch.{node}.{job_key(job_name)}.{exec_id}"


def launch_digest(request: bytes) -> bytes:
    """What a launch record holds: the digest of the exact bytes of the run request."""
    return hashlib.sha256(request).hexdigest().encode()


class Lease:
    def __init__(self, kv: KeyValue, node: str, incarnation: str, ttl: float, margin: float = 1.0) -> None:
        self.kv = kv
        self.node = node
        self.incarnation = incarnation
        self.ttl = ttl
        self.margin = min(margin, ttl / 4)
        self.revision = 0
        self.term = 0
        self._renewed_at = 0.0

    @property
    def fence(self) -> int:
        """The fencing token: the revision at which this term began."""
        return self.term

    def valid(self) -> bool:
        return self.revision > 0 and time.monotonic() - self._renewed_at < self.ttl - self.margin

    def remaining(self) -> float:
        return self.ttl - self.margin - (time.monotonic() - self._renewed_at)

    async def holder(self) -> LeaseRecord | None:
        try:
            entry = await self.kv.get(LEASE_KEY)
        except KeyNotFoundError:
            return None
        if not entry.value or entry.operation:
            return None
        return decode(entry.value, LeaseRecord)

    async def try_acquire(self, since: datetime) -> bool:
        """Take the lease if it is free, or if it is held by an earlier incarnation of this very node."""
        record = encode(LeaseRecord(node=self.node, incarnation=self.incarnation, since=since))
        sent = time.monotonic()
        try:
            self.revision = await self.kv.create(LEASE_KEY, record)
        except KeyWrongLastSequenceError:
            return await self._reclaim_own(record, sent)
        except (KeyNotFoundError, *TRANSIENT):
            # KeyNotFoundError: the create lost to a key that expired right after (nats-py then looks
            # for a delete marker and finds nothing). Free now: the next try takes it.
            return False
        self.term = self.revision
        self._renewed_at = sent
        return True

    async def _reclaim_own(self, record: bytes, sent: float) -> bool:
        """A restarted server (same node name, new process) need not wait for its old lease to expire."""
        try:
            entry = await self.kv.get(LEASE_KEY)
        except (KeyNotFoundError, *TRANSIENT):
            return False
        if not entry.value:
            return False
        held = decode(entry.value, LeaseRecord)
        if held.node != self.node or held.incarnation == self.incarnation:
            return False
        try:
            self.revision = await self.kv.update(LEASE_KEY, record, last=entry.revision)
        except (KeyWrongLastSequenceError, *TRANSIENT):
            return False
        self.term = self.revision
        self._renewed_at = sent
        logger.info("reclaimed the lease held by a previous run of %s", self.node)
        return True

    async def renew(self, since: datetime) -> bool:
        """Extend the lease. False means it is lost for good (someone else holds it)."""
        held = LeaseRecord(node=self.node, incarnation=self.incarnation, since=since, term=self.term)
        sent = time.monotonic()
        try:
            self.revision = await self.kv.update(LEASE_KEY, encode(held), last=self.revision)
        except KeyWrongLastSequenceError:
            logger.warning("lease lost: another server holds it now")
            self.revision = self.term = 0
            return False
        self._renewed_at = sent
        return True

    async def release(self) -> None:
        """Give the lease up so another server takes over at once."""
        if self.revision:
            with contextlib.suppress(*TRANSIENT):  # the lease then simply expires
                await delete_at(self.kv, LEASE_KEY, self.revision)
        self.revision = self.term = 0
