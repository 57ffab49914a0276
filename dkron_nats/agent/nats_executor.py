"""The built-in ``nats`` executor: publish a message on a NATS subject, or send a request and keep the reply.

Config keys (all strings), a superset of Dkron's ``nats`` executor:

``subject``
    Where to publish (required): a valid NATS subject without wildcards (``*``, ``>``).  Subjects of NATS
    itself and of dkron-nats are refused: those starting with ``$`` (``$KV.``, ``$JS.``, ``$SYS.``, ...),
    ``_INBOX`` (someone else's replies) or ``dkron.``.
``message``
    The payload (UTF-8), empty by default.
``headers``
    A JSON object of name to value (``{"Tenant": "acme"}``), or Dkron's JSON array of ``"Name: value"``
    strings (split on the first colon).
``request``
    Go ``strconv.ParseBool``: true sends a request and the reply's payload becomes the output; no reply
    within ``timeout``, or no responders on the subject, fails the run.
``timeout``
    A Go duration (``"1.5s"``) or whole seconds (``"10"``), default 5s: how long the reply (request), the
    server's confirmation (publish) and connecting may take.
``url``
    A comma-separated list of NATS server URLs; without it, the agent's ``--nats-executor-url``, and
    without that the run fails.  A connection is opened for each run, with the job's own credentials (or
    none), and closed afterwards whatever happens: the node's own connection, and so its permissions on
    the cluster's buckets and subjects, is never lent to a job.
``userName``, ``password``, ``token``
    Credentials for that NATS (a URL may also carry ``user:password@``).
``debug``
    Any non-empty value (as in Dkron) writes the config (password masked) and the headers to the output.

Every message carries ``Dkron-Job``, ``Dkron-Execution-Id`` and ``Nats-Msg-Id: <job>:<launch id>``: the
launch id is the execution id without its ``=<attempt>`` suffix, so a JetStream stream that captures the
subject stores a message once even when a retry of the same launch publishes it again.  A publish counts
as a success only once the server has confirmed it (a flush).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import anyio
import nats.errors
from nats.aio.client import Client

from dkron_nats.agent.executor import ConfigError, ExecutionContext, ExecutorResult, OutputSink
from dkron_nats.config import Settings
from dkron_nats.durations import parse_go_duration

__all__ = ["NatsExecutor", "msg_id_of"]

logger = logging.getLogger(__name__)

_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})
"""The values Go's strconv.ParseBool accepts."""

DEFAULT_TIMEOUT = 5.0
_CLOSE_GRACE = 5.0
"""Seconds a per-run connection may take to close; it is abandoned (not leaked: closed) after that."""

RESERVED_HEADERS = ("Dkron-Job", "Dkron-Execution-Id", "Nats-Msg-Id")
_HEADER_NAME = re.compile(r"^[!-9;-~]+$")
"""Printable ASCII without spaces or colons, as the NATS header block requires."""
_URL_SCHEMES = ("nats", "tls", "ws", "wss")
RESERVED_SUBJECTS = ("$", "_INBOX", "dkron.")
"""Prefixes of NATS's own subjects (JetStream, KV, system account), of reply inboxes and of dkron-nats's."""
_CREDENTIALS_IN_URL = re.compile(r"//[^/@]*@")


@dataclass(frozen=True, slots=True)
class _Spec:
    """A validated executor_config."""

    subject: str
    message: bytes
    headers: dict[str, str]
    request: bool
    timeout: float
    servers: list[str]
    user: str
    password: str
    token: str
    debug: bool


# --------------------------------------------------------------------------- config parsing


def _parse_subject(value: str) -> str:
    if not value:
        raise ConfigError(
            'nats: "subject" is missing: set it to the subject to publish on, e.g. "jobs.done"', key="subject"
        )
    tokens = value.split(".")
    problem = ""
    if any(ch.isspace() for ch in value):
        problem = "it contains whitespace"
    elif any(not token for token in tokens):
        problem = "it has an empty token (a leading, trailing or doubled dot)"
    elif any(token in ("*", ">") for token in tokens):
        problem = "wildcards (* and >) can be subscribed to, not published on"
    elif value.startswith(RESERVED_SUBJECTS):
        problem = (
            "subjects starting with $, _INBOX or dkron. belong to NATS and dkron-nats themselves "
            "(JetStream, KV buckets, replies, the scheduler); publish on a subject of your own"
        )
    if problem:
        raise ConfigError(f'nats: invalid "subject" "{value}": {problem}', key="subject")
    return value


def _parse_bool(key: str, value: str) -> bool:
    if value in _TRUE:
        return True
    if not value or value in _FALSE:
        return False
    raise ConfigError(f'nats: invalid "{key}" "{value}": use true or false')


def _parse_timeout(value: str) -> float:
    text = value.strip()
    if not text:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(int(text)) if text.isdigit() else parse_go_duration(text).total_seconds()
    except ValueError:
        seconds = -1.0
    if seconds <= 0:
        raise ConfigError(
            f'nats: invalid "timeout" "{value}": use a positive Go duration ("5s", "1m") or whole seconds'
        )
    return seconds


def _header_pairs(value: str) -> list[tuple[str, object]]:
    """The (name, value) pairs of `headers`, in either accepted shape, not yet checked."""
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise ConfigError(
            f'nats: "headers" is not valid JSON ({exc}): use {{"Name": "value"}} or ["Name: value"]'
        ) from None
    if isinstance(parsed, dict):
        return list(parsed.items())
    if isinstance(parsed, list):
        pairs: list[tuple[str, object]] = []
        for entry in parsed:
            name, sep, text = entry.partition(":") if isinstance(entry, str) else ("", "", "")
            if not sep:
                raise ConfigError(f'nats: "headers" entry {json.dumps(entry)} is not a "Name: value" string')
            pairs.append((name.strip(), text.strip()))
        return pairs
    raise ConfigError('nats: "headers" must be a JSON object {"Name": "value"} or an array ["Name: value"]')


def _parse_headers(value: str) -> dict[str, str]:
    if not value.strip():
        return {}
    headers: dict[str, str] = {}
    seen: set[str] = set()
    for name, text in _header_pairs(value):
        if not _HEADER_NAME.match(name):
            raise ConfigError(f'nats: "headers" has an invalid name "{name}": use letters, digits and dashes')
        if not isinstance(text, str) or "\r" in text or "\n" in text:
            raise ConfigError(f'nats: "headers" value of "{name}" must be a single-line string')
        if name.lower() in {reserved.lower() for reserved in RESERVED_HEADERS}:
            raise ConfigError(f'nats: "headers" cannot set "{name}": the executor sets it on every message')
        if name.lower() in seen:
            raise ConfigError(f'nats: "headers" names "{name}" twice: give each header once')
        seen.add(name.lower())
        headers[name] = text
    return headers


def _parse_servers(value: str) -> list[str]:
    servers = [part.strip() for part in value.split(",") if part.strip()]
    for server in servers:
        scheme, sep, _ = server.partition("://")
        if sep and scheme.lower() not in _URL_SCHEMES:
            raise ConfigError(
                f'nats: invalid "url" "{_redact(server)}": use nats://host:port (or tls://, ws://, wss://)'
            )
    websocket = {server.lower().startswith(("ws://", "wss://")) for server in servers}
    if len(websocket) > 1:
        raise ConfigError('nats: "url" mixes websocket and plain NATS servers: list one kind only')
    return servers


def _parse(config: Mapping[str, str], default_url: str = "") -> _Spec:
    """The config; without `url` the agent's `--nats-executor-url` (none: `servers` is empty)."""
    servers = _parse_servers(config.get("url", "") or default_url)
    user, password = config.get("userName", "") or "", config.get("password", "") or ""
    return _Spec(
        subject=_parse_subject(config.get("subject", "") or ""),
        message=(config.get("message", "") or "").encode(),
        headers=_parse_headers(config.get("headers", "") or ""),
        request=_parse_bool("request", config.get("request", "") or ""),
        timeout=_parse_timeout(config.get("timeout", "") or ""),
        servers=servers,
        user=user,
        password=password,
        token=config.get("token", "") or "",
        debug=bool(config.get("debug", "")),
    )


# --------------------------------------------------------------------------- helpers


def msg_id_of(ctx: ExecutionContext) -> str:
    """`<job>:<launch id>`: the same for every attempt of one launch, so JetStream stores it once."""
    return f"{ctx.job_name}:{ctx.execution_id.partition('=')[0]}"


def _message_headers(spec: _Spec, ctx: ExecutionContext) -> dict[str, str]:
    return {
        **spec.headers,
        "Dkron-Job": ctx.job_name,
        "Dkron-Execution-Id": ctx.execution_id,
        "Nats-Msg-Id": msg_id_of(ctx),
    }


def _redact(url: str) -> str:
    """The URL without credentials, fit for output and logs."""
    return _CREDENTIALS_IN_URL.sub("//", url)


def _where(spec: _Spec) -> str:
    return ", ".join(_redact(server) for server in spec.servers)


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _debug_text(spec: _Spec, headers: Mapping[str, str]) -> bytes:
    shown = {
        "subject": spec.subject,
        "request": spec.request,
        "timeout": _seconds(spec.timeout),
        "url": _where(spec),
        "userName": spec.user,
        "password": "***" if spec.password else "",
        "token": "***" if spec.token else "",
        "message_bytes": len(spec.message),
    }
    return f"nats: config {json.dumps(shown)}\nnats: headers {json.dumps(dict(headers))}\n".encode()


class _LastError:
    """nats-py reports why each connection attempt failed only to its error callback: keep the last one."""

    def __init__(self) -> None:
        self.error: BaseException | None = None

    async def record(self, error: BaseException) -> None:
        self.error = error
        logger.debug("nats executor connection: %s", error)


# --------------------------------------------------------------------------- sending


async def _publish(nc: Client, spec: _Spec, headers: dict[str, str], output: OutputSink) -> ExecutorResult:
    try:
        await nc.publish(spec.subject, spec.message, headers=headers)
        # The server's PONG follows everything sent before it: the message has reached the server.
        with anyio.fail_after(spec.timeout):
            await nc.flush(timeout=math.ceil(spec.timeout))
    except TimeoutError:
        return ExecutorResult(
            False, f"nats: {_where(spec)} did not confirm the publish within {_seconds(spec.timeout)}"
        )
    except nats.errors.Error as exc:
        return ExecutorResult(False, f'nats: publish on "{spec.subject}" failed: {exc}')
    line = (
        f'published {len(spec.message)} bytes on subject "{spec.subject}" via {_where(spec)} '
        f"(Nats-Msg-Id {headers['Nats-Msg-Id']})\n"
    )
    await output.write(line.encode())
    return ExecutorResult(True)


async def _request(nc: Client, spec: _Spec, headers: dict[str, str], output: OutputSink) -> ExecutorResult:
    try:
        reply = await nc.request(spec.subject, spec.message, timeout=spec.timeout, headers=headers)
    except nats.errors.NoRespondersError:
        return ExecutorResult(
            False, f'nats: no responders on subject "{spec.subject}": nothing subscribed to it answers'
        )
    except TimeoutError:
        return ExecutorResult(
            False,
            f'nats: no reply on subject "{spec.subject}" within {_seconds(spec.timeout)} '
            '(timeout; raise "timeout" if the responder is slow)',
        )
    except nats.errors.Error as exc:
        return ExecutorResult(False, f'nats: request on "{spec.subject}" failed: {exc}')
    await output.write(reply.data)
    return ExecutorResult(True)


async def _send(nc: Client, spec: _Spec, headers: dict[str, str], output: OutputSink) -> ExecutorResult:
    if spec.request:
        return await _request(nc, spec, headers, output)
    return await _publish(nc, spec, headers, output)


# --------------------------------------------------------------------------- a connection of its own


async def _connect(nc: Client, spec: _Spec) -> ExecutorResult | None:
    """Connect `nc` to `url`; a failed result saying why, or None once connected."""
    last = _LastError()
    try:
        with anyio.fail_after(spec.timeout):
            await nc.connect(
                servers=spec.servers,
                user=spec.user or None,
                password=spec.password or None,
                token=spec.token or None,
                name="dkron-nats nats executor",
                error_cb=last.record,  # nats-py wants a coroutine function
                allow_reconnect=False,
                max_reconnect_attempts=1,
                reconnect_time_wait=0,
                connect_timeout=math.ceil(spec.timeout),
            )
    except TimeoutError:
        return ExecutorResult(False, f"nats: no connection to {_where(spec)} within {_seconds(spec.timeout)}")
    except (nats.errors.Error, OSError) as exc:
        reason = last.error if isinstance(exc, nats.errors.NoServersError) and last.error else exc
        hint = (
            ': check "userName" and "password" (or "token")' if "authorization" in str(reason).lower() else ""
        )
        return ExecutorResult(False, f"nats: cannot connect to {_where(spec)}: {reason}{hint}")
    return None


async def _close(nc: Client) -> None:
    with anyio.CancelScope(shield=True), anyio.move_on_after(_CLOSE_GRACE):
        try:
            await nc.close()
        except Exception:
            # A client that failed half-way through connecting may not close cleanly; it holds nothing more.
            logger.debug("closing the nats executor's connection failed", exc_info=True)


async def _send_on_own_connection(spec: _Spec, headers: dict[str, str], output: OutputSink) -> ExecutorResult:
    nc = Client()
    try:
        failed = await _connect(nc, spec)
        return failed or await _send(nc, spec, headers, output)
    finally:
        await _close(nc)


# --------------------------------------------------------------------------- the executor


class NatsExecutor:
    """Publishes (or requests) on a NATS subject, on its own connection to the job's (or agent's) NATS."""

    name = "nats"

    def __init__(self, default_url: str = "") -> None:
        self.default_url = default_url

    def configure(self, settings: Settings) -> None:
        """Take the agent's `--nats-executor-url` (called once, before the first run)."""
        self.default_url = settings.nats_executor_url

    def validate(self, config: Mapping[str, str]) -> None:
        _parse(config)  # a job without url is accepted: the agents may have --nats-executor-url

    async def execute(
        self, config: Mapping[str, str], ctx: ExecutionContext, output: OutputSink
    ) -> ExecutorResult:
        try:
            spec = _parse(config, self.default_url)
        except ConfigError as exc:
            return ExecutorResult(False, str(exc))
        if not spec.servers:
            return ExecutorResult(
                False,
                f"nats: no NATS to publish to on node {ctx.node_name}: set executor_config.url (and its "
                "userName/password or token), or start the agent with --nats-executor-url; the node's own "
                "connection is never used for jobs",
            )
        headers = _message_headers(spec, ctx)
        if spec.debug:
            await output.write(_debug_text(spec, headers))
        return await _send_on_own_connection(spec, headers, output)
