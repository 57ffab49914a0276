"""The pipelined JetStream publisher and TypedKV's writes through it, against a real nats-server.

Each test starts its own nats-server (JetStream, free ports) and stops it by its PID. The publisher must
answer exactly what nats-py's `js.publish` / `kv.create` / `kv.update` answer, because callers keep their
`except` clauses; and it must never leave a publish waiting for an ack that cannot come.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.lowlevel
import httpx
import msgspec
import nats
import pytest
from anyio.abc import SocketStream, TaskStatus
from nats.aio.client import Client
from nats.js.api import KeyValueConfig, StreamConfig
from nats.js.errors import APIError, KeyWrongLastSequenceError, NoStreamResponseError
from nats.js.kv import KeyValue

from dkron_nats.kv.publisher import AckLostError, JsPublisher
from dkron_nats.kv.typed import TRANSIENT, TypedKV
from tests.harness import free_port, spawn_nats_server, wait_for

pytestmark = pytest.mark.anyio
BUCKET = "b"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Value(msgspec.Struct):
    n: int


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    port, monitor = free_port(), free_port()
    conf = tmp_path / "nats.conf"
    conf.write_text(f'listen: "127.0.0.1:{port}"\njetstream {{ store_dir: "{tmp_path / "store"}" }}\n')
    proc = spawn_nats_server(conf, monitor, tmp_path / "nats.log")
    try:
        url = f"http://127.0.0.1:{monitor}/healthz"
        wait_for(lambda: httpx.get(url, timeout=2).status_code == 200, 20, "nats-server to be ready")
        yield Server(proc, port)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)  # a test may have stopped it
            proc.kill()
        proc.wait(timeout=10)


async def _connect(port: int) -> Client:
    return await nats.connect(
        f"nats://127.0.0.1:{port}",
        inbox_prefix="_INBOX.n1",  # as a node connects: the acks stay in its own inbox
        reconnect_time_wait=0.1,
        max_reconnect_attempts=-1,
        connect_timeout=2,
    )


@pytest.fixture
async def nc(server: Server) -> AsyncIterator[Client]:
    client = await _connect(server.port)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def kv(nc: Client) -> KeyValue:
    store: KeyValue = await nc.jetstream().create_key_value(KeyValueConfig(bucket=BUCKET, history=1))
    return store


@pytest.fixture
async def publisher(nc: Client) -> AsyncIterator[JsPublisher]:
    async with anyio.create_task_group() as tg:
        started = JsPublisher(nc)
        await tg.start(started.run)
        yield started
        tg.cancel_scope.cancel()


async def test_an_ack_names_stream_and_sequence_and_a_resent_msg_id_is_a_duplicate(
    kv: KeyValue, publisher: JsPublisher
) -> None:
    first = await publisher.publish(f"$KV.{BUCKET}.k", b"1", msg_id="write-1")
    again = await publisher.publish(f"$KV.{BUCKET}.k", b"1", msg_id="write-1")
    assert (first.stream, first.seq, first.duplicate) == (f"KV_{BUCKET}", 1, False)
    assert (again.seq, again.duplicate) == (1, True), "a resend after a lost ack must not be stored twice"
    assert (await kv.status()).values == 1


async def test_create_only_is_refused_over_a_value_and_over_a_delete_marker(
    kv: KeyValue, publisher: JsPublisher
) -> None:
    claims = TypedKV(kv, Value, publisher)
    assert await claims.create_only("k", Value(1)) == 1
    assert await claims.create_only("k", Value(2)) is None
    with pytest.raises(KeyWrongLastSequenceError) as refused:
        await publisher.publish(f"$KV.{BUCKET}.k", b"x", expected_last_subject_seq=0)
    assert refused.value.err_code == 10071  # also an APIError, as js.publish reports it
    await kv.delete("k")
    assert await claims.create_only("k", Value(3)) is None, "a deleted record was claimed again"
    # `create` keeps nats-py's kv.create meaning (a deleted job can be created again).
    recreated = await claims.create("k", Value(4))
    assert recreated is not None
    assert await claims.create("k", Value(5)) is None
    assert await claims.get("k") == (Value(4), recreated)


async def test_a_stale_compare_and_set_is_a_conflict_as_with_nats_py(
    kv: KeyValue, publisher: JsPublisher
) -> None:
    pipelined, plain = TypedKV(kv, Value, publisher), TypedKV(kv, Value)
    rev = await pipelined.put("k", Value(1))
    assert await pipelined.update("k", Value(2), rev) == rev + 1
    assert await pipelined.update("k", Value(3), rev) is None
    assert await plain.update("k", Value(3), rev) is None
    with pytest.raises(KeyWrongLastSequenceError):
        await publisher.publish(f"$KV.{BUCKET}.k", b"x", expected_last_subject_seq=rev)
    assert await pipelined.get("k") == (Value(2), rev + 1)


async def test_a_subject_without_a_stream_has_no_responders(publisher: JsPublisher) -> None:
    with pytest.raises(NoStreamResponseError):
        await publisher.publish("nowhere.at.all", b"x")
    assert isinstance(NoStreamResponseError(), TRANSIENT)  # what with_retry waits out (an election)


async def test_other_api_errors_are_nats_py_s(nc: Client, publisher: JsPublisher) -> None:
    await nc.jetstream().add_stream(StreamConfig(name="S", subjects=["s.>"], max_msg_size=16))
    with pytest.raises(APIError) as refused:
        await publisher.publish("s.big", b"x" * 64)
    assert (refused.value.code, refused.value.err_code) == (400, 10054)  # message size exceeds maximum


async def test_no_more_than_the_window_is_in_flight(nc: Client, kv: KeyValue) -> None:
    seen = 0
    async with anyio.create_task_group() as tg:
        publisher = JsPublisher(nc, window=8)
        await tg.start(publisher.run)

        async def watch() -> None:
            nonlocal seen
            while True:
                seen = max(seen, publisher.in_flight)
                await anyio.lowlevel.checkpoint()

        tg.start_soon(watch)
        async with anyio.create_task_group() as writers:
            for i in range(200):
                writers.start_soon(publisher.publish, f"$KV.{BUCKET}.k{i}", b"x")
        tg.cancel_scope.cancel()
    assert seen == 8, f"{seen} publishes were in flight at once (window 8)"
    assert (await kv.status()).values == 200


async def test_a_lost_server_fails_pending_publishes_at_once(server: Server, kv: KeyValue) -> None:
    """A publish whose connection is gone fails with a transient error well before its timeout."""
    nc = await _connect(server.port)
    failures: list[BaseException] = []
    try:
        async with anyio.create_task_group() as tg:
            publisher = JsPublisher(nc, ack_timeout=60)
            await tg.start(publisher.run)
            await _stopped(server.proc.pid)  # nothing is acked from now on

            async def publish(i: int) -> None:
                try:
                    await publisher.publish(f"$KV.{BUCKET}.k{i}", b"x", msg_id=f"m{i}")
                except Exception as exc:  # noqa: BLE001 - collected and checked below
                    failures.append(exc)

            for i in range(20):
                tg.start_soon(publish, i)
            await _until(lambda: publisher.in_flight == 20)
            began = time.monotonic()
            os.kill(server.proc.pid, signal.SIGKILL)
            await _until(lambda: len(failures) == 20, deadline=10)
            took = time.monotonic() - began
            tg.cancel_scope.cancel()
    finally:
        await nc.close()
    assert took < 5, f"pending publishes failed only after {took:.1f}s"
    assert all(isinstance(f, AckLostError) and isinstance(f, TRANSIENT) for f in failures), failures


async def test_an_unanswered_publish_times_out(server: Server, nc: Client, kv: KeyValue) -> None:
    async with anyio.create_task_group() as tg:
        publisher = JsPublisher(nc, ack_timeout=0.5)
        await tg.start(publisher.run)
        await _stopped(server.proc.pid)
        try:
            with anyio.fail_after(10), pytest.raises(TRANSIENT):
                await publisher.publish(f"$KV.{BUCKET}.k", b"x")
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        tg.cancel_scope.cancel()


async def test_a_write_whose_ack_is_lost_is_reported_as_written(server: Server, kv: KeyValue) -> None:
    """The claim (create-only) and the compare-and-set reach the store, the connection drops before the ack
    comes back, the resend is refused (JetStream checks the expected revision before the Msg-Id): the
    write still counts as done, not as someone else's. (nats-py's kv.create/kv.update report it taken.)"""
    proxy = AckDropper(server.port)
    async with anyio.create_task_group() as tg:
        await tg.start(proxy.serve)
        nc = await _connect(proxy.port)
        try:
            async with anyio.create_task_group() as inner:
                publisher = JsPublisher(nc)
                await inner.start(publisher.run)
                claims = TypedKV(kv, Value, publisher)  # kv reads go straight to the server
                proxy.drop_ack_of(f"$KV.{BUCKET}.claimed")
                with anyio.fail_after(20):
                    rev = await claims.create_only("claimed", Value(1))
                assert proxy.dropped == 1
                assert rev == 1, "a claim this node made was reported as someone else's"
                proxy.drop_ack_of(f"$KV.{BUCKET}.claimed")
                with anyio.fail_after(20):
                    assert await claims.update("claimed", Value(2), rev) == 2
                assert proxy.dropped == 2
                inner.cancel_scope.cancel()
        finally:
            await nc.close()
        tg.cancel_scope.cancel()


class AckDropper:
    """A TCP proxy to a nats-server. Armed with a subject, it forwards the client's next message on it,
    then drops the connection once the server answers: the write is stored, its ack never arrives."""

    def __init__(self, server_port: int) -> None:
        self.server_port = server_port
        self.port = free_port()
        self.armed = b""
        self.dropped = 0

    def drop_ack_of(self, subject: str) -> None:
        self.armed = f"PUB {subject} ".encode()

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=self.port)
        task_status.started()
        await listener.serve(self._relay)

    async def _relay(self, client: SocketStream) -> None:
        server = await anyio.connect_tcp("127.0.0.1", self.server_port)
        cut = anyio.Event()
        async with client, server, anyio.create_task_group() as tg:

            async def upstream() -> None:
                async for chunk in client:
                    # nats-py sends a publish with headers as HPUB: match the subject either way.
                    hit = bool(self.armed) and self.armed in chunk.replace(b"HPUB ", b"PUB ")
                    await server.send(chunk)
                    if hit:
                        self.armed = b""
                        cut.set()

            async def downstream() -> None:
                async for chunk in server:
                    if cut.is_set():  # the server's answer to the armed publish, or after it
                        self.dropped += 1
                        tg.cancel_scope.cancel()
                        return
                    await client.send(chunk)

            tg.start_soon(upstream)
            tg.start_soon(downstream)


async def _until(condition: Callable[[], bool], deadline: float = 10) -> None:
    with anyio.fail_after(deadline):
        while not condition():
            await anyio.sleep(0.01)


async def _stopped(pid: int) -> None:
    """SIGSTOP the server and wait until it is stopped: on a loaded machine the signal takes effect later,
    and a publish sent meanwhile was still acknowledged."""
    os.kill(pid, signal.SIGSTOP)
    stat = anyio.Path(f"/proc/{pid}/stat")
    with anyio.fail_after(10):
        while (await stat.read_text()).rsplit(")", 1)[1].split()[0] != "T":
            await anyio.sleep(0.01)
