"""The live-output publisher holds a bounded amount of memory whatever the job prints (real nats-server)."""

from __future__ import annotations

import socket
import subprocess
import tracemalloc
from collections.abc import Iterator

import nats
import pytest

from dkron_nats.kv.output import OutputPublisher
from dkron_nats.natsserver import nats_server_binary
from tests.harness import free_port, wait_for

CHUNK = b"x" * 65536
MB = 1024 * 1024


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def nats_url() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [nats_server_binary(), "-a", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: _accepts(port), what="nats-server to listen")
        yield f"nats://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _accepts(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


async def _held_while_writing(publisher: OutputPublisher, megabytes: int) -> int:
    """The most memory allocated (beyond what was before) while `megabytes` of output are written."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(megabytes * MB // len(CHUNK)):
            await publisher.write(CHUNK)
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


@pytest.mark.anyio
async def test_output_after_nats_failed_is_dropped_not_held(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    publisher = OutputPublisher(nc, nc.jetstream(), "dkron.output.job.1-n1")
    await publisher.write(b"first line\n")
    await publisher.flush()
    await nc.close()  # every publish from now on fails
    held = await _held_while_writing(publisher, 200)
    assert held < 10 * MB, f"{held / MB:.0f} MB held for output that cannot be published"


@pytest.mark.anyio
async def test_output_past_the_live_limit_is_dropped_not_held(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        publisher = OutputPublisher(nc, nc.jetstream(), "dkron.output.job.1-n1", limit=MB)
        held = await _held_while_writing(publisher, 200)
        assert held < 10 * MB, f"{held / MB:.0f} MB held for output past the live limit"
        assert publisher.sent == MB
    finally:
        await nc.close()
