"""The ``tcpcheck`` executor: does ``host``:``port`` accept a TCP connection (and answer as expected)?

Config keys (all strings):

``host``, ``port``
    The service to check (both required; ``port`` is 1-65535).
``timeout``
    A Go duration (``"5s"``, ``"250ms"``), default 5s, for the whole check: connecting, sending and
    waiting for the expected reply.
``send``
    Text (UTF-8) written once connected, such as ``"PING\\r\\n"``.
``expect``
    A Python regular expression the reply must match (searched in the text received so far, decoded as
    UTF-8).  Without ``send`` it checks what the service says first (a banner).

The output says what happened and how long each step took; a failed check says which step failed.
Only ``dkron_nats.agent.executor``, the public plugin interface, is used.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass

import anyio
import anyio.abc
from dkron_nats.agent.executor import ConfigError, ExecutionContext, ExecutorResult, OutputSink

from dkron_nats_tcpcheck.durations import parse_go_duration

__all__ = ["TcpCheckExecutor"]

DEFAULT_TIMEOUT = 5.0
REPLY_LIMIT = 64 * 1024
"""Bytes of reply searched for `expect`; a service that sends more without matching fails the check."""
SHOWN_REPLY = 200
"""Characters of the reply quoted in the output."""


@dataclass(frozen=True, slots=True)
class CheckSpec:
    """A validated executor_config."""

    host: str
    port: int
    timeout: float
    send: bytes
    expect: re.Pattern[str] | None

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class CheckFailed(Exception):
    """A step of the check failed; the message says which and why."""


# --------------------------------------------------------------------------- config parsing


def _parse_host(value: str) -> str:
    host = value.strip()
    if not host:
        raise ConfigError('tcpcheck: "host" is missing: set it to the host name or IP address to check')
    if any(ch.isspace() for ch in host):
        raise ConfigError(f'tcpcheck: invalid "host" "{value}": set it to a host name or IP address')
    return host


def _parse_port(value: str) -> int:
    text = value.strip()
    if not text:
        raise ConfigError('tcpcheck: "port" is missing: set it to the TCP port to check, such as "443"')
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 65535:
        raise ConfigError(f'tcpcheck: invalid "port" "{value}": use a number from 1 to 65535')
    return int(text)


def _parse_timeout(value: str) -> float:
    if not value.strip():
        return DEFAULT_TIMEOUT
    try:
        seconds = parse_go_duration(value)
    except ValueError:
        seconds = -1.0
    if seconds <= 0:
        raise ConfigError(f'tcpcheck: invalid "timeout" "{value}": use a positive Go duration such as "5s"')
    return seconds


def _parse_expect(value: str) -> re.Pattern[str] | None:
    if not value:
        return None
    try:
        return re.compile(value)
    except re.error as exc:
        raise ConfigError(f'tcpcheck: invalid "expect" regular expression "{value}": {exc}') from None


def parse_config(config: Mapping[str, str]) -> CheckSpec:
    """The check `config` describes; ConfigError naming the key if it is invalid."""
    return CheckSpec(
        host=_parse_host(config.get("host", "") or ""),
        port=_parse_port(config.get("port", "") or ""),
        timeout=_parse_timeout(config.get("timeout", "") or ""),
        send=(config.get("send", "") or "").encode(),
        expect=_parse_expect(config.get("expect", "") or ""),
    )


# --------------------------------------------------------------------------- the check


class _Clock:
    """Milliseconds since the check started, for the output."""

    def __init__(self) -> None:
        self._start = time.monotonic()

    def elapsed(self) -> str:
        return f"{(time.monotonic() - self._start) * 1000:.1f}ms"


def _quote(reply: bytes) -> str:
    text = reply.decode("utf-8", errors="replace")
    shown = text[:SHOWN_REPLY] + ("..." if len(text) > SHOWN_REPLY else "")
    return repr(shown)


async def _connect(spec: CheckSpec) -> anyio.abc.SocketStream:
    try:
        return await anyio.connect_tcp(spec.host, spec.port)
    except OSError as exc:
        # anyio wraps the per-address errors in "All connection attempts failed": report the real one.
        cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
        raise CheckFailed(f"tcpcheck: cannot connect to {spec.address}: {_reason(cause)}") from None


def _reason(error: OSError) -> str:
    """ "Connection refused" rather than asyncio's "Connect call failed ('127.0.0.1', 5)"."""
    if isinstance(error, socket.gaierror) or not error.errno:
        return error.strerror or str(error)
    return os.strerror(error.errno)


async def _read_until_match(stream: anyio.abc.SocketStream, expect: re.Pattern[str]) -> bytes:
    """Read until the reply so far matches `expect`; CheckFailed if the service closes or says too much."""
    reply = b""
    while not expect.search(reply.decode("utf-8", errors="replace")):
        if len(reply) >= REPLY_LIMIT:
            raise CheckFailed(
                f"tcpcheck: {len(reply)} bytes received without a match for expect /{expect.pattern}/: "
                f"{_quote(reply)}"
            )
        try:
            reply += await stream.receive(REPLY_LIMIT)
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            raise CheckFailed(
                f"tcpcheck: the connection closed before the reply matched expect /{expect.pattern}/; "
                f"received {len(reply)} bytes: {_quote(reply)}"
            ) from None
    return reply


async def _converse(
    stream: anyio.abc.SocketStream, spec: CheckSpec, clock: _Clock, output: OutputSink
) -> None:
    if spec.send:
        try:
            await stream.send(spec.send)
        except (anyio.BrokenResourceError, OSError) as exc:
            raise CheckFailed(f"tcpcheck: sending to {spec.address} failed: {exc}") from None
        await output.write(f"sent {len(spec.send)} bytes after {clock.elapsed()}\n".encode())
    if spec.expect is not None:
        reply = await _read_until_match(stream, spec.expect)
        line = f"reply matched expect /{spec.expect.pattern}/ after {clock.elapsed()}: {_quote(reply)}\n"
        await output.write(line.encode())


def _timed_out(spec: CheckSpec, connected: bool) -> str:
    """What had not happened when the timeout expired."""
    within = f"within {spec.timeout:g}s (timeout)"
    if not connected:
        return f"tcpcheck: no TCP connection to {spec.address} {within}"
    if spec.expect is not None:
        return f"tcpcheck: no reply matching expect /{spec.expect.pattern}/ from {spec.address} {within}"
    return f"tcpcheck: sending to {spec.address} did not finish {within}"


class TcpCheckExecutor:
    """Checks that a TCP service accepts connections and, optionally, answers as expected."""

    name = "tcpcheck"

    def validate(self, config: Mapping[str, str]) -> None:
        parse_config(config)

    async def execute(
        self, config: Mapping[str, str], ctx: ExecutionContext, output: OutputSink
    ) -> ExecutorResult:
        spec = parse_config(config)
        clock = _Clock()
        connected = False
        try:
            with anyio.fail_after(spec.timeout):
                stream = await _connect(spec)
                connected = True
                async with stream:
                    await output.write(f"connected to {spec.address} in {clock.elapsed()}\n".encode())
                    await _converse(stream, spec, clock, output)
        except TimeoutError:
            return ExecutorResult(False, _timed_out(spec, connected))
        except CheckFailed as exc:
            return ExecutorResult(False, str(exc))
        await output.write(f"check of {spec.address} passed in {clock.elapsed()}\n".encode())
        return ExecutorResult(True)
