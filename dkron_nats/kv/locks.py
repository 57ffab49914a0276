"""Cluster-wide concurrency leases for `forbid` and `replace` jobs.

One key per job in `dkron-locks` names the launch (group) that is running. The leader takes it before it
sends a launch's run requests and releases it once every execution of that launch has finished. The agents
running the launch renew it while they run, with a per-key TTL (`Nats-TTL`), so a launch whose agents all
died frees the job within one TTL: a crashed agent never leaves a job busy forever. The lease lives in KV,
not in a leader's memory, so a new leader sees it at once.
"""

from __future__ import annotations

import logging
import math

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import APIError, KeyNotFoundError
from nats.js.kv import KeyValue

from dkron_nats.kv.publisher import WRONG_LAST_SEQUENCE_CODES
from dkron_nats.kv.typed import delete_at, with_retry
from dkron_nats.models import decode, encode

logger = logging.getLogger(__name__)
LOCKED = ("forbid", "replace")
"""Concurrency policies enforced with the job's lease."""


class JobLock(msgspec.Struct, kw_only=True):
    group: int
    job: str


class JobLocks:
    def __init__(self, kv: KeyValue, js: JetStreamContext, ttl: float) -> None:
        self.kv = kv
        self.js = js
        self.ttl = max(1, round(ttl))  # Nats-TTL takes whole seconds, at least 1
        self.bucket = str(kv._name)

    async def holder(self, key: str) -> int | None:
        """The group (launch) holding the job, or None if it is free."""
        return (await self._read(key))[0]

    async def _read(self, key: str) -> tuple[int | None, int]:
        """(holding group or None, the key's last revision: 0 if it has none, e.g. after expiry)."""
        try:
            entry = await with_retry(lambda: self.kv.get(key), what="lock read")
        except KeyNotFoundError as exc:
            deleted = exc.entry  # a delete marker: writing over it must name its revision
            return None, (deleted.revision or 0) if deleted is not None else 0
        if not entry.value or entry.operation in ("DEL", "PURGE"):
            return None, entry.revision or 0
        return decode(entry.value, JobLock).group, entry.revision or 0

    async def take(self, key: str, job: str, group: int, replacing: int | None = None) -> bool:
        """Hold the job for `group`: if it is free, already held by `group`, or held by `replacing`."""
        held, revision = await self._read(key)
        if held == group:
            return True
        if held is not None and held != replacing:
            return False
        return await self._write(key, JobLock(group=group, job=job), revision)

    async def renew(self, key: str, job: str, group: int, ttl: float | None = None) -> bool:
        """Extend the lease while `group` runs, for `ttl` seconds (default: the lease TTL); False once
        another launch holds it (or nobody)."""
        held, revision = await self._read(key)
        if held != group:
            return False
        return await self._write(key, JobLock(group=group, job=job), revision, ttl)

    async def release(self, key: str, group: int) -> None:
        held, revision = await self._read(key)
        if held == group:
            # False when another launch took it over meanwhile: then it is not ours to release.
            await with_retry(lambda: delete_at(self.kv, key, revision), what="lock release")

    async def _write(self, key: str, lock: JobLock, last: int, ttl: float | None = None) -> bool:
        """Compare-and-set with a per-key TTL (nats-py's KV update cannot set one)."""
        seconds = self.ttl if ttl is None else max(self.ttl, math.ceil(ttl))
        headers = {"Nats-Expected-Last-Subject-Sequence": str(last), "Nats-TTL": f"{seconds}s"}
        try:
            await with_retry(
                lambda: self.js.publish(f"$KV.{self.bucket}.{key}", encode(lock), headers=headers),
                what="lock write",
            )
        except APIError as exc:
            if exc.err_code in WRONG_LAST_SEQUENCE_CODES:
                return False
            raise
        return True
