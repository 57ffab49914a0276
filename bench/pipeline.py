"""The bare execution pipeline: what one execution costs at the least on this NATS server and client.

Everything an execution of dkron-nats needs on the wire, and nothing else, in one asyncio process on one
connection (nats-py, the public NATS protocol only):

  scheduler  per tick one decision record (a JetStream publish, waited for), then per execution a run
             request on a tag subject (`bare.run.dc.dc1.role.web`) into a work-queue stream, with Nats-Msg-Id
  agent      hand-rolled pull requests of 256 on the stream's consumer; per delivery a create-only claim
             (a publish to `$KV.bare-exec.<job>.<slot>` with `Nats-Expected-Last-Subject-Sequence: 0`), a
             no-op job, the final record as compare-and-set on the claim's sequence, then the request's ack
  observer   a consumer of the bucket's stream that sees every claim and every record

JetStream writes are core publishes whose acks all come to one wildcard inbox subscription (`AckInbox`):
no future, task or subscription per message, a bounded window in flight. The scheduler keeps at most
`BACKLOG` executions between its request and the record's arrival, so the rate measured is what the
pipeline completes, not what the stream can queue. The audit after the window: every run request has
exactly one claim and one record (0 lost, 0 duplicated), no claim or CAS conflict, the work queue empty.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from bench.common import cpu_seconds
from dkron_nats.kv.publisher import ApiError, PubAck

WINDOW = 64
"""JetStream publishes in flight per publisher."""
BATCH = 256
"""Run requests per pull request, and decisions per tick."""
BACKLOG = 4096
"""Executions at most between the scheduler's request and the observer's sight of the record."""
JOBS = 1000
BUCKET = "bare-exec"
RUN_SUBJECT = "bare.run.dc.dc1.role.web"
PULL_EXPIRES_NS = 2_000_000_000


OnAck = Callable[[PubAck], Awaitable[None]]
_decode_ack = msgspec.json.Decoder(PubAck).decode


class AckInbox:
    """JetStream publishes whose acks come to one subscription on `<inbox>.*`, with at most `window` of
    them unanswered. A publish may name a callback for its ack (looked up by the reply's last token)."""

    def __init__(self, nc: Client, window: int = WINDOW) -> None:
        self._nc = nc
        self._window = window
        self._prefix = nc.new_inbox()
        self._callbacks: dict[int, OnAck] = {}
        self._next = 0
        self._room = asyncio.Event()
        self.in_flight = 0
        self.acked = 0
        self.errors: list[ApiError] = []

    async def start(self) -> None:
        await self._nc.subscribe(f"{self._prefix}.*", cb=self._on_ack, pending_msgs_limit=1_000_000)

    async def publish(
        self, subject: str, payload: bytes, headers: dict[str, str] | None = None, on_ack: OnAck | None = None
    ) -> None:
        """Publish once fewer than `window` are unanswered."""
        while self.in_flight >= self._window:
            self._room.clear()
            await self._room.wait()
        await self.publish_now(subject, payload, headers, on_ack)

    async def publish_now(
        self, subject: str, payload: bytes, headers: dict[str, str] | None = None, on_ack: OnAck | None = None
    ) -> None:
        """Publish without waiting for room: for a write that takes over the slot of the one whose ack is
        being handled (a callback waiting for room here would wait for itself)."""
        token = self._next
        self._next += 1
        if on_ack is not None:
            self._callbacks[token] = on_ack
        self.in_flight += 1
        await self._nc.publish(subject, payload, reply=f"{self._prefix}.{token}", headers=headers)

    async def drained(self) -> None:
        """Wait until every publish has its ack (bounded: 30 s)."""
        async with asyncio.timeout(30):
            while self.in_flight:
                self._room.clear()
                await self._room.wait()

    async def _on_ack(self, msg: Msg) -> None:
        ack = _decode_ack(msg.data)
        self.in_flight -= 1
        if ack.error is None:
            self.acked += 1
        callback = self._callbacks.pop(int(msg.subject[len(self._prefix) + 1 :]), None)
        if callback is not None:
            await callback(ack)
        elif ack.error is not None:
            self.errors.append(ack.error)
        self._room.set()


async def publish_rate(nc: Client, subject: str, payload: bytes, seconds: float) -> float:
    """JetStream publishes acknowledged per second through one `AckInbox` (64 in flight), counting acks."""
    inbox = AckInbox(nc)
    await inbox.start()
    started = time.monotonic()
    deadline = started + seconds
    i = 0
    while time.monotonic() < deadline:
        await inbox.publish(f"{subject}.{i % 100}", payload)
        i += 1
    acked, elapsed = inbox.acked, time.monotonic() - started
    await inbox.drained()
    if inbox.errors:
        raise RuntimeError(f"{len(inbox.errors)} publishes refused, the first: {inbox.errors[0]}")
    return acked / elapsed


@dataclass
class Ledger:
    """What the observer saw, per execution number."""

    claims: Counter[int] = field(default_factory=Counter)
    records: Counter[int] = field(default_factory=Counter)
    finished: int = 0
    progress: asyncio.Event = field(default_factory=asyncio.Event)

    async def on_entry(self, msg: Msg) -> None:
        execution = int(msg.subject.rsplit(".", 1)[1])
        if msg.data == b"claim":
            self.claims[execution] += 1
            return
        self.records[execution] += 1
        if self.records[execution] == 1:
            self.finished += 1
            self.progress.set()


class Scheduler:
    """One decision record per tick, then the tick's run requests, keeping the backlog bounded."""

    def __init__(self, nc: Client, ledger: Ledger) -> None:
        self._ledger = ledger
        self._writes = AckInbox(nc)
        self.requested = 0

    async def start(self) -> None:
        await self._writes.start()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            room = BACKLOG - (self.requested - self._ledger.finished)
            if room < BATCH:
                self._ledger.progress.clear()
                await self._ledger.progress.wait()
                continue
            first = self.requested
            await self._decide(first, BATCH)
            for n in range(first, first + BATCH):
                key = f"j{n % JOBS}.{n}".encode()
                await self._writes.publish(RUN_SUBJECT, key, {"Nats-Msg-Id": f"run-{n}"})
            self.requested += BATCH

    async def _decide(self, first: int, count: int) -> None:
        """The tick's decisions are durable before any of them is dispatched."""
        decided: asyncio.Future[PubAck] = asyncio.get_running_loop().create_future()

        async def on_ack(ack: PubAck) -> None:
            decided.set_result(ack)

        await self._writes.publish("bare.sched.0", f"{first} {count}".encode(), on_ack=on_ack)
        ack = await decided
        if ack.error is not None:
            raise RuntimeError(f"decision record refused: {ack.error}")

    async def drained(self) -> list[ApiError]:
        await self._writes.drained()
        return self._writes.errors


class Agent:
    """Pulls run requests in batches, claims, runs nothing, records and acks, no task per execution."""

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._writes = AckInbox(nc)
        self._inbox = nc.new_inbox()
        self._credit = 0
        self.pulling = True
        self.claim_conflicts = 0
        self.record_conflicts = 0

    async def start(self) -> None:
        await self._writes.start()
        await self._nc.subscribe(self._inbox, cb=self._on_delivery, pending_msgs_limit=1_000_000)
        await self._top_up()

    async def _top_up(self) -> None:
        """Keep two batches asked for."""
        while self.pulling and self._credit < 2 * BATCH:
            self._credit += BATCH
            request = b'{"batch":%d,"expires":%d}' % (BATCH, PULL_EXPIRES_NS)
            await self._nc.publish("$JS.API.CONSUMER.MSG.NEXT.RUNS.agents", request, reply=self._inbox)

    async def _on_delivery(self, msg: Msg) -> None:
        headers = msg.headers or {}
        if "Status" in headers:  # a pull request ended (408 expired): take back its unused credit
            self._credit -= int(headers.get("Nats-Pending-Messages", "0"))
            await self._top_up()
            return
        self._credit -= 1
        key, request = msg.data.decode(), msg.reply

        async def claimed(ack: PubAck) -> None:
            if ack.error is not None:  # another agent holds it (not in this pipeline: counted as a fault)
                self.claim_conflicts += 1
                await self._nc.publish(request, b"+ACK")
                return
            # the job: a no-op
            expected = {"Nats-Expected-Last-Subject-Sequence": str(ack.seq)}
            await self._writes.publish_now(f"$KV.{BUCKET}.{key}", b"done", expected, recorded)

        async def recorded(ack: PubAck) -> None:
            if ack.error is not None:
                self.record_conflicts += 1
            await self._nc.publish(request, b"+ACK")

        claim = {"Nats-Expected-Last-Subject-Sequence": "0"}
        await self._writes.publish(f"$KV.{BUCKET}.{key}", b"claim", claim, claimed)
        await self._top_up()

    async def drained(self) -> list[ApiError]:
        await self._writes.drained()
        return self._writes.errors


async def _create_streams(nc: Client) -> None:
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name="DECISIONS", subjects=["bare.sched.>"], storage=StorageType.FILE))
    await js.add_stream(
        StreamConfig(
            name="RUNS",
            subjects=["bare.run.>"],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
        )
    )
    await js.add_consumer(
        "RUNS",
        ConsumerConfig(
            durable_name="agents",
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=60,
            max_ack_pending=4 * BACKLOG,
            filter_subject="bare.run.>",
        ),
    )
    await js.create_key_value(KeyValueConfig(bucket=BUCKET, history=1, storage=StorageType.FILE))


async def _observe(nc: Client, ledger: Ledger) -> None:
    """A push consumer of the bucket's stream, no acks: it sees every claim and every record."""
    deliver = nc.new_inbox()
    await nc.subscribe(deliver, cb=ledger.on_entry, pending_msgs_limit=1_000_000)
    await nc.jetstream().add_consumer(
        f"KV_{BUCKET}", ConsumerConfig(deliver_subject=deliver, ack_policy=AckPolicy.NONE)
    )


@dataclass
class Sample:
    at: float
    finished: int
    messages: int
    python_cpu: float
    server_cpu: float


def _sample(nc: Client, ledger: Ledger, server_pid: int) -> Sample:
    stats = nc.stats
    return Sample(
        time.monotonic(),
        ledger.finished,
        stats["in_msgs"] + stats["out_msgs"],
        time.process_time(),
        cpu_seconds(server_pid) if server_pid else 0.0,
    )


async def bare_pipeline(url: str, seconds: float, server_pid: int = 0) -> dict[str, Any]:
    """Executions per second the bare pipeline sustains over `seconds` (after a short warm-up), messages and
    CPU per execution, and the audit of every execution it started."""
    nc = await nats.connect(url, pending_size=8 * 1024 * 1024)
    try:
        await _create_streams(nc)
        ledger = Ledger()
        await _observe(nc, ledger)
        scheduler, agent = Scheduler(nc, ledger), Agent(nc)
        await scheduler.start()
        await agent.start()
        stop = asyncio.Event()
        scheduling = asyncio.create_task(scheduler.run(stop))
        await asyncio.sleep(min(1.0, seconds / 4))  # warm-up: streams, consumer, first pulls
        before = _sample(nc, ledger, server_pid)
        await asyncio.sleep(seconds)
        after = _sample(nc, ledger, server_pid)
        stop.set()
        ledger.progress.set()
        await scheduling
        return await _audit(nc, ledger, scheduler, agent, before, after)
    finally:
        await nc.close()


async def _audit(
    nc: Client, ledger: Ledger, scheduler: Scheduler, agent: Agent, before: Sample, after: Sample
) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while ledger.finished < scheduler.requested and time.monotonic() < deadline:
        ledger.progress.clear()
        await asyncio.wait_for(ledger.progress.wait(), 30)
    agent.pulling = False
    refused = await scheduler.drained() + await agent.drained()
    await nc.flush()
    queued = await _left_in_queue(nc)
    started = range(scheduler.requested)
    done = after.finished - before.finished
    return {
        "executions_per_s": round(done / (after.at - before.at)),
        "messages_per_execution": round((after.messages - before.messages) / done, 2),
        "python_us_per_execution": round((after.python_cpu - before.python_cpu) / done * 1e6, 1),
        "nats_server_us_per_execution": round((after.server_cpu - before.server_cpu) / done * 1e6, 1),
        "executions": scheduler.requested,
        "lost": sum(1 for n in started if not ledger.records[n]),
        "duplicated": sum(max(0, ledger.claims[n] - 1) + max(0, ledger.records[n] - 1) for n in started),
        "claim_conflicts": agent.claim_conflicts,
        "record_conflicts": agent.record_conflicts,
        "refused_writes": len(refused),
        "left_in_queue": queued,
    }


async def _left_in_queue(nc: Client) -> int:
    """Run requests still in the work queue once every ack has had time to arrive (0 when all were acked:
    the server applies acks on its own, a little after they arrive)."""
    js = nc.jetstream()
    left = 0
    for _ in range(100):
        left = (await js.stream_info("RUNS")).state.messages
        if not left:
            break
        await asyncio.sleep(0.05)
    return int(left)
