"""The tcpcheck executor against real TCP services on loopback ports, started and stopped by each test."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
import anyio.abc
import pytest
from anyio.abc import SocketAttribute
from dkron_nats.agent.executor import ConfigError, ExecutionContext, ExecutorResult, OutputBuffer
from dkron_nats.agent.registry import discover_executors

from dkron_nats_tcpcheck import TcpCheckExecutor

pytestmark = pytest.mark.anyio

CTX = ExecutionContext(job_name="redis-alive", execution_id="1700000000-node-a", node_name="node-a")
Handler = Callable[[anyio.abc.SocketStream], Awaitable[None]]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def service(handler: Handler) -> AsyncIterator[int]:
    """A TCP service on a free loopback port that runs `handler` per connection; yields the port."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handler)
        yield listener.extra(SocketAttribute.local_port)  # noqa: S610 (anyio's typed attribute, not Django)
        tg.cancel_scope.cancel()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def run(config: dict[str, str], within: float = 10.0) -> tuple[ExecutorResult, str]:
    output = OutputBuffer()
    with anyio.fail_after(within):
        result = await TcpCheckExecutor().execute(config, CTX, output)
    return result, output.text()


async def accept_and_hold(stream: anyio.abc.SocketStream) -> None:
    async with stream:
        await anyio.sleep_forever()


def pong_after(request: bytes, reply: bytes, received: list[bytes]) -> Handler:
    """A service that answers `reply` once it has read `request` (and records what it read)."""

    async def handle(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            data = b""
            while not data.endswith(request):
                data += await stream.receive()
            received.append(data)
            await stream.send(reply)

    return handle


# --------------------------------------------------------------------------- connecting


async def test_open_port_passes_and_says_how_long_it_took() -> None:
    async with service(accept_and_hold) as port:
        result, output = await run({"host": "127.0.0.1", "port": str(port)})
    assert result == ExecutorResult(True)
    lines = output.splitlines()
    assert lines[0].startswith(f"connected to 127.0.0.1:{port} in ")
    assert lines[0].endswith("ms")
    assert lines[-1].startswith(f"check of 127.0.0.1:{port} passed in ")


async def test_closed_port_fails_saying_the_connection_was_refused() -> None:
    port = closed_port()
    result, output = await run({"host": "127.0.0.1", "port": str(port)})
    assert not result.success
    assert result.error == f"tcpcheck: cannot connect to 127.0.0.1:{port}: Connection refused"
    assert output == ""


# --------------------------------------------------------------------------- send and expect


async def test_reply_matching_expect_passes() -> None:
    received: list[bytes] = []
    async with service(pong_after(b"PING\r\n", b"+PONG\r\n", received)) as port:
        config = {"host": "127.0.0.1", "port": str(port), "send": "PING\r\n", "expect": r"^\+PONG"}
        result, output = await run(config)
    assert result == ExecutorResult(True)
    assert received == [b"PING\r\n"]
    assert "sent 6 bytes after " in output
    assert "reply matched expect /^\\+PONG/ after " in output
    assert output.splitlines()[2].endswith("'+PONG\\r\\n'")


async def test_banner_is_checked_without_send() -> None:
    async def banner(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await stream.send(b"SSH-2.0-OpenSSH_9.6\r\n")
            await anyio.sleep_forever()

    async with service(banner) as port:
        result, output = await run({"host": "127.0.0.1", "port": str(port), "expect": "^SSH-2\\.0-"})
    assert result.success
    assert "sent" not in output


async def test_reply_that_does_not_match_fails_showing_it() -> None:
    received: list[bytes] = []
    async with service(pong_after(b"PING\r\n", b"-NOAUTH Authentication required\r\n", received)) as port:
        config = {"host": "127.0.0.1", "port": str(port), "send": "PING\r\n", "expect": r"^\+PONG"}
        result, _ = await run(config)
    assert not result.success
    assert result.error == (
        "tcpcheck: the connection closed before the reply matched expect /^\\+PONG/; "
        "received 33 bytes: '-NOAUTH Authentication required\\r\\n'"
    )


async def test_silent_service_fails_after_the_timeout() -> None:
    async with service(accept_and_hold) as port:
        config = {"host": "127.0.0.1", "port": str(port), "expect": "READY", "timeout": "300ms"}
        with anyio.fail_after(5):
            result, output = await run(config)
    assert not result.success
    assert result.error == (
        f"tcpcheck: no reply matching expect /READY/ from 127.0.0.1:{port} within 0.3s (timeout)"
    )
    assert output.startswith(f"connected to 127.0.0.1:{port}")


# --------------------------------------------------------------------------- config and discovery


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"port": "80"}, '"host" is missing'),
        ({"host": "a b", "port": "80"}, 'invalid "host" "a b"'),
        ({"host": "db"}, '"port" is missing'),
        ({"host": "db", "port": "http"}, 'invalid "port" "http": use a number from 1 to 65535'),
        ({"host": "db", "port": "70000"}, 'invalid "port" "70000"'),
        ({"host": "db", "port": "80", "timeout": "5"}, 'invalid "timeout" "5"'),
        ({"host": "db", "port": "80", "timeout": "-1s"}, 'invalid "timeout" "-1s"'),
        ({"host": "db", "port": "80", "expect": "(unclosed"}, 'invalid "expect" regular expression'),
    ],
)
def test_invalid_config_is_refused_naming_the_key(config: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        TcpCheckExecutor().validate(config)
    assert message in str(caught.value)


def test_installed_plugin_is_discovered_like_the_built_ins() -> None:
    executors = discover_executors()
    assert isinstance(executors.get("tcpcheck"), TcpCheckExecutor)
    assert "shell" in executors.names()
