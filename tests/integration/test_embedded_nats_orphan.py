"""A killed node's embedded nats-server stops gracefully (its death signal is SIGTERM); should it hang, the
node's next start on the same data directory ends it before starting its own."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from dkron_nats import natsserver
from dkron_nats.natsserver import EmbeddedNats
from tests.harness import free_port, pid_alive, stop_process

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _hung_server(conf: Path) -> subprocess.Popen[bytes]:
    """A process that looks like this node's nats-server (its config on the command line) and ignores
    SIGTERM, as a shutdown that hangs would."""
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(120)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, "-c", str(conf)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    return proc


async def test_the_next_start_ends_a_nats_server_its_killed_process_left_hanging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(natsserver, "ORPHAN_GRACE", 0.5)
    hung = _hung_server(tmp_path / "nats-server.conf")
    try:
        (tmp_path / "nats-server.pid").write_text(f"{hung.pid}\n")
        hung.send_signal(signal.SIGTERM)  # what PR_SET_PDEATHSIG sends when the node is killed
        with anyio.fail_after(20):
            async with EmbeddedNats(tmp_path, f"127.0.0.1:{free_port()}", "node-a") as server:
                assert hung.wait(5) == -signal.SIGKILL
                pid = int((tmp_path / "nats-server.pid").read_text())
                assert pid != hung.pid
                assert pid_alive(pid), "the new nats-server is not the one in the pid file"
                assert server.url
    finally:
        stop_process(hung)


async def test_a_pid_file_naming_another_process_is_left_alone(tmp_path: Path) -> None:
    other = _hung_server(tmp_path / "elsewhere.conf")  # not this node's config: a reused pid
    try:
        (tmp_path / "nats-server.pid").write_text(f"{other.pid}\n")
        with anyio.fail_after(20):
            async with EmbeddedNats(tmp_path, f"127.0.0.1:{free_port()}", "node-a"):
                assert other.poll() is None, "a process that is not this node's nats-server was killed"
    finally:
        stop_process(other)
