"""The leader lease: one KV key with a TTL; its revision is the fencing token.

Acquire with create-if-absent, renew with compare-and-set on the revision. A holder whose last successful
renewal was sent more than `ttl - margin` ago considers itself demoted, even if it cannot reach NATS: the
server's expiry clock starts after our send time, so this bound needs no clock synchronisation.

Each holder also makes an Ed25519 key pair of its own and writes the public key into the lease record; it
signs every run request with the private one. Only servers may write the lease, so an agent that follows it
can tell a request of the current leader from one anybody else published, without a round trip.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from datetime import datetime

import msgspec
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey
from nats.errors import Error as NatsError
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from dkron_nats.kv.typed import TRANSIENT, delete_at
from dkron_nats.models import decode, encode
from dkron_nats.subjects import lease_key

logger = logging.getLogger(__name__)
LEASE_KEY = lease_key(None)
"""The lease of the only partition; a cluster of several has one per partition (`subjects.lease_key`)."""


class LeaseRecord(msgspec.Struct, kw_only=True):
    node: str
    incarnation: str
    since: datetime
    term: int = 0
    """The revision at which this holder acquired the lease (0 in the acquiring write itself)."""
    key: str = ""
    """The holder's public key (base64): run requests carry its signature (empty: an older version)."""


def term_of(record: LeaseRecord, revision: int) -> int:
    """The fencing token a lease entry stands for: constant while one holder keeps renewing."""
    return record.term or revision


SIGNATURE_HEADER = "Dkron-Signature"
"""The header of a run request that holds the leader's signature of its body."""
SIGNED_HERE_KEPT = 2048
"""Signatures of run requests a process remembers for its own agent (about 2 MiB at most)."""


class SignedHere:
    """The run requests this process signed that its own agent has not checked yet.

    An agent in the same process as the leader (`agent --server`) takes a request that matches one of them
    (signature, key and body) as verified: this process made that signature of that body with that key, the
    same proof an Ed25519 check gives, for a dict lookup instead of ~60 µs of the node's CPU per execution.
    Bounded: a request the agent takes late (or never: it runs elsewhere) is checked the usual way.
    """

    def __init__(self, kept: int = SIGNED_HERE_KEPT) -> None:
        self._kept = kept
        self._signed: dict[str, tuple[str, bytes]] = {}

    def remember(self, signature: str, key: str, body: bytes) -> None:
        self._signed[signature] = (key, body)
        if len(self._signed) > self._kept:
            del self._signed[next(iter(self._signed))]  # the oldest

    def vouches_for(self, signature: str, key: str, body: bytes) -> bool:
        return self._signed.pop(signature, None) == (key, body)


SIGNED_HERE = SignedHere()
"""Process-wide: the node's leases sign, its agent checks."""


def signature_refusal(key: str, body: bytes, signature: str | None) -> str:
    """Why `body` was not signed by the holder of the lease whose public key is `key` ("" if it was)."""
    if not key:
        return "no launch of this leader can be checked: its lease names no signing key (an older version)"
    if not signature:
        return "not launched by the current leader: the request is not signed"
    if SIGNED_HERE.vouches_for(signature, key, body):
        return ""
    try:
        VerifyKey(base64.b64decode(key)).verify(body, base64.b64decode(signature))
    except (BadSignatureError, binascii.Error, ValueError):
        return "not launched by the current leader: the request is not signed by it"
    return ""


class Lease:
    def __init__(
        self,
        kv: KeyValue,
        node: str,
        incarnation: str,
        ttl: float,
        margin: float = 1.0,
        key: str = LEASE_KEY,
    ) -> None:
        self.kv = kv
        self.key = key
        self.node = node
        self.incarnation = incarnation
        self.ttl = ttl
        self.margin = min(margin, ttl / 4)
        self.revision = 0
        self.term = 0
        self._renewed_at = 0.0
        self._signer = SigningKey.generate()
        self.public_key = base64.b64encode(bytes(self._signer.verify_key)).decode()

    def sign(self, body: bytes) -> str:
        """The signature of a run request's body, for `SIGNATURE_HEADER`."""
        signature = base64.b64encode(self._signer.sign(body).signature).decode()
        SIGNED_HERE.remember(signature, self.public_key, body)
        return signature

    def _record(self, since: datetime, term: int = 0) -> bytes:
        record = LeaseRecord(
            node=self.node, incarnation=self.incarnation, since=since, term=term, key=self.public_key
        )
        return encode(record)

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
            entry = await self.kv.get(self.key)
        except KeyNotFoundError:
            return None
        if not entry.value or entry.operation:
            return None
        return decode(entry.value, LeaseRecord)

    async def try_acquire(self, since: datetime) -> bool:
        """Take the lease if it is free, or if it is held by an earlier incarnation of this very node."""
        record = self._record(since)
        sent = time.monotonic()
        try:
            self.revision = await self.kv.create(self.key, record)
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
            entry = await self.kv.get(self.key)
        except (KeyNotFoundError, *TRANSIENT):
            return False
        if not entry.value:
            return False
        held = decode(entry.value, LeaseRecord)
        if held.node != self.node or held.incarnation == self.incarnation:
            return False
        if not await self._take_over(record, int(entry.revision or 0), sent):
            return False
        logger.info("reclaimed the lease held by a previous run of %s", self.node)
        return True

    async def steal(self, held_at: int, since: datetime) -> bool:
        """Take the lease from a holder that is gone (its NATS connection is), without waiting for the lease
        to expire: a compare-and-set over the revision last seen, so a holder that renewed since keeps it.
        The new term fences the old holder's writes should it come back (election.py)."""
        return await self._take_over(self._record(since), held_at, time.monotonic())

    async def _take_over(self, record: bytes, held_at: int, sent: float) -> bool:
        try:
            self.revision = await self.kv.update(self.key, record, last=held_at)
        except (KeyWrongLastSequenceError, *TRANSIENT):
            return False
        self.term = self.revision
        self._renewed_at = sent
        return True

    async def renew(self, since: datetime) -> bool:
        """Extend the lease. False means it is lost for good (someone else holds it)."""
        sent = time.monotonic()
        try:
            record = self._record(since, self.term)
            self.revision = await self.kv.update(self.key, record, last=self.revision)
        except KeyWrongLastSequenceError:
            logger.warning("lease lost: another server holds it now")
            self.revision = self.term = 0
            return False
        self._renewed_at = sent
        return True

    async def release(self) -> None:
        """Give the lease up so another server takes over at once."""
        if self.revision:
            try:
                if not await delete_at(self.kv, self.key, self.revision):
                    await self._release_latest()
            except (NatsError, TimeoutError) as exc:  # it then expires; a failed release must end nothing
                logger.warning("could not release %s (it expires on its own): %s", self.key, exc)
        self.revision = self.term = 0

    async def _release_latest(self) -> None:
        """The stored lease moved past the revision this holder knows: a renewal whose answer was lost
        landed. If it is still this holder's term, delete it at its real revision; left there, it would keep
        the partition without an owner until the TTL (seen: 10 s of missed slots after a hand-over)."""
        try:
            entry = await self.kv.get(self.key)
        except KeyNotFoundError:
            return
        if not entry.value or entry.revision is None:
            return
        record = decode(entry.value, LeaseRecord)
        mine = record.node == self.node and record.incarnation == self.incarnation
        if mine and term_of(record, int(entry.revision)) == self.term:
            await delete_at(self.kv, self.key, int(entry.revision))
