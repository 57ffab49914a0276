"""The built-in ``http`` executor, compatible with Dkron's executor_config.

Config keys (all strings):

``method``, ``url``
    The request to make (both required; ``url`` is http or https).
``body``
    The request body, sent as UTF-8.
``headers``
    A JSON array of ``"Name: value"`` strings, split on the first colon (a value may contain colons,
    Dkron cuts it there); ``"Name:value"`` is accepted too.
``timeout``
    Integer seconds (as in Dkron) or a Go duration ("1m30s"); default 30 s, ``0`` means no timeout.
    It bounds the whole exchange, reading the body included.
``expectCode``
    A comma list of status codes that count as success (exact membership).  Without it any status
    below 400 succeeds; Dkron counts every status, 500 included, as a success.
``expectBody``
    A regular expression (Python's syntax, run by the ``regex`` package) searched in the response body (in
    its first ``expect_body_limit`` bytes), off the event loop; a search that takes longer than 1 s fails
    the run ("simplify the pattern") instead of stalling the agent.
``debug``
    Non-empty: the output starts with the request sent and the response status.  Values of
    ``Authorization``, ``Proxy-Authorization``, ``Cookie`` and of any header or query parameter whose
    name contains token, secret, key, password, passwd, auth or session are shown as ``***``, as is the
    url's password; the body is shown by its size only.
``tlsNoVerifyPeer``
    A Go ``strconv.ParseBool`` truthy value skips the server certificate check.
``tlsCertificateFile``, ``tlsCertificateKeyFile``
    A client certificate (and its key, unless the certificate file holds both) for mutual TLS.
``tlsRootCAsFile``
    The CA bundle the server certificate is verified against (instead of the default trust store).

Where a request may go is the node's egress policy (``--http-allow``/``--http-deny``, see
dkron_nats/egress.py): every address the host resolves to, at every redirect, is checked where the
connection is opened; a refused one fails the run naming the address and the flag that allows it.
Proxies from the environment (HTTP_PROXY, HTTPS_PROXY) are not used: the address a proxy connects to could
not be checked.

The output is the response body, streamed to the sink as it arrives.  Every request carries
``Idempotency-Key: <job>:<execution id without "=<attempt>">`` (the same for every attempt of one launch
on one node) and ``User-Agent: dkron-nats/<version>``, unless the job's headers set them.  One client is
kept per distinct TLS setting (and TLS file version) in a small LRU, so keep-alive connections are reused
across runs; evicted clients are closed once no run uses them, and ``aclose`` closes them all.
"""

from __future__ import annotations

import json
import os
import re
import ssl
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import unquote

import anyio
import anyio.to_thread
import httpx
import regex

from dkron_nats.agent.executor import ConfigError, ExecutionContext, ExecutorResult, OutputSink
from dkron_nats.agent.shell import format_go_duration
from dkron_nats.config import Settings
from dkron_nats.durations import parse_go_duration
from dkron_nats.egress import EgressDenied, EgressPolicy, guarded_transport
from dkron_nats.version import VERSION

__all__ = ["HttpExecutor"]

_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
"""The values Go's strconv.ParseBool reads as true."""

DEFAULT_TIMEOUT = timedelta(seconds=30)
CLIENT_CACHE_SIZE = 32
EXPECT_BODY_LIMIT = 1024 * 1024
"""Bytes of the body kept for the expectBody search: the body itself is streamed, never held whole."""
EXPECT_BODY_TIMEOUT = 1.0
"""Seconds the expectBody search may take: a pattern that backtracks without end fails the run instead."""
KEEPALIVE_EXPIRY = 90.0
"""Seconds an idle connection is kept for the next run (Go's default transport keeps them 90 s)."""

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
"""An HTTP token (RFC 9110): what a method or a header name may be made of."""
_ATTEMPT_SUFFIX = re.compile(r"=\d+$")
_SECRET_NAME = re.compile(r"token|secret|key|password|passwd|auth|cookie|session", re.IGNORECASE)
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
_MASK = "***"


@dataclass(frozen=True, slots=True)
class _Tls:
    """The TLS settings of a job: jobs with equal settings share one client."""

    no_verify_peer: bool = False
    certificate_file: str | None = None
    certificate_key_file: str | None = None
    root_cas_file: str | None = None

    def files(self) -> list[tuple[str, str]]:
        """(config key, path) of every file this setting names."""
        named = [
            ("tlsCertificateFile", self.certificate_file),
            ("tlsCertificateKeyFile", self.certificate_key_file),
            ("tlsRootCAsFile", self.root_cas_file),
        ]
        return [(key, path) for key, path in named if path is not None]


@dataclass(frozen=True, slots=True)
class _ClientKey:
    """A TLS setting plus the identity of its files, so that a rotated certificate gets a new client."""

    tls: _Tls
    file_versions: tuple[tuple[str, int, int, int], ...]


@dataclass(frozen=True, slots=True)
class _Spec:
    """A validated executor_config."""

    method: str
    url: httpx.URL
    body: bytes | None
    headers: list[tuple[str, str]]
    timeout: timedelta | None
    expect_codes: frozenset[int] | None
    expect_body: regex.Pattern[str] | None
    debug: bool
    tls: _Tls = field(default_factory=_Tls)


# --------------------------------------------------------------------------- config parsing


def _value(config: Mapping[str, str], key: str) -> str:
    return (config.get(key, "") or "").strip()


def _parse_method(value: str) -> str:
    if not value:
        raise ConfigError(
            'http: "method" is required: set executor_config.method, e.g. "GET" or "POST"', key="method"
        )
    if not _TOKEN.match(value):
        raise ConfigError(f'http: invalid method "{value}": it must be a single word such as GET or POST')
    return value.upper()


def _parse_url(value: str) -> httpx.URL:
    if not value:
        raise ConfigError(
            'http: "url" is required: set executor_config.url, e.g. "https://example.com/hook"', key="url"
        )
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL as exc:
        raise ConfigError(f'http: invalid url "{value}": {exc}') from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigError(
            f'http: invalid url "{value}": expected an absolute http:// or https:// address with a host'
        )
    return url


def _parse_header(entry: object) -> tuple[str, str]:
    if not isinstance(entry, str):
        raise ConfigError(f'http: invalid headers entry {json.dumps(entry)}: expected a "Name: value" string')
    name, sep, value = entry.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not _TOKEN.match(name):
        raise ConfigError(f'http: invalid headers entry "{entry}": expected "Name: value"')
    if any(ch in value for ch in "\r\n\0"):
        raise ConfigError(f'http: invalid headers entry "{entry}": a value cannot contain line breaks')
    return name, value


def _parse_headers(value: str) -> list[tuple[str, str]]:
    if not value:
        return []
    try:
        entries = json.loads(value)
    except ValueError:
        entries = None
    if not isinstance(entries, list):
        raise ConfigError(
            f"http: invalid headers {value!r}: expected a JSON array of strings, "
            'e.g. ["Content-Type: application/json"]'
        )
    return [_parse_header(entry) for entry in entries]


def _parse_timeout(value: str) -> timedelta | None:
    if not value:
        return DEFAULT_TIMEOUT
    try:
        td = timedelta(seconds=int(value)) if value.lstrip("+-").isdigit() else parse_go_duration(value)
    except ValueError:
        raise ConfigError(
            f'http: invalid timeout "{value}": expected whole seconds ("30") or a Go duration ("1m30s")'
        ) from None
    if td < timedelta(0):
        raise ConfigError(f'http: invalid timeout "{value}": it cannot be negative (0 means no timeout)')
    return td if td > timedelta(0) else None


def _parse_expect_code(value: str) -> frozenset[int] | None:
    codes: set[int] = set()
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit() or not 100 <= int(part) <= 599:
            raise ConfigError(
                f'http: invalid expectCode "{value}": expected a comma list of status codes, e.g. "200,201"'
            )
        codes.add(int(part))
    return frozenset(codes) or None


def _parse_expect_body(value: str) -> regex.Pattern[str] | None:
    if not value:
        return None
    try:
        return regex.compile(value)
    except regex.error as exc:
        raise ConfigError(
            f'http: invalid expectBody "{value}": not a valid regular expression ({exc})'
        ) from None


def _parse_tls(config: Mapping[str, str]) -> _Tls:
    tls = _Tls(
        no_verify_peer=_value(config, "tlsNoVerifyPeer") in _TRUE,
        certificate_file=_value(config, "tlsCertificateFile") or None,
        certificate_key_file=_value(config, "tlsCertificateKeyFile") or None,
        root_cas_file=_value(config, "tlsRootCAsFile") or None,
    )
    if tls.certificate_key_file and not tls.certificate_file:
        raise ConfigError(
            "http: tlsCertificateKeyFile is set without tlsCertificateFile: "
            "set tlsCertificateFile to the client certificate that goes with the key"
        )
    return tls


def _parse(config: Mapping[str, str]) -> _Spec:
    body = config.get("body", "") or ""
    return _Spec(
        method=_parse_method(_value(config, "method")),
        url=_parse_url(_value(config, "url")),
        body=body.encode() if body else None,
        headers=_parse_headers(_value(config, "headers")),
        timeout=_parse_timeout(_value(config, "timeout")),
        expect_codes=_parse_expect_code(_value(config, "expectCode")),
        expect_body=_parse_expect_body(config.get("expectBody", "") or ""),
        debug=bool(config.get("debug", "")),
        tls=_parse_tls(config),
    )


def _request_headers(spec: _Spec, ctx: ExecutionContext) -> list[tuple[bytes, bytes]]:
    """The job's headers plus the ones every run sends, which the job may override.

    Values are sent as UTF-8 bytes, as Go sends its strings (httpx would refuse non-ASCII text).
    """
    present = {name.lower() for name, _ in spec.headers}
    headers = list(spec.headers)
    if "idempotency-key" not in present:
        launch = _ATTEMPT_SUFFIX.sub("", ctx.execution_id)
        headers.append(("Idempotency-Key", f"{ctx.job_name}:{launch}"))
    if "user-agent" not in present:
        headers.append(("User-Agent", f"dkron-nats/{VERSION}"))
    return [(name.encode("ascii"), value.encode()) for name, value in headers]


# --------------------------------------------------------------------------- debug output


def _is_secret(name: str) -> bool:
    if name.lower() == "idempotency-key":  # derived from the launch, and what a receiver logs anyway
        return False
    return name.lower() in _SECRET_HEADERS or bool(_SECRET_NAME.search(name))


def _masked_url(url: httpx.URL) -> str:
    """The url as sent, with its password and the values of secret-looking query parameters masked."""
    user, has_password, _ = url.userinfo.decode("ascii").partition(":")
    userinfo = f"{user}:{_MASK}@" if has_password else (f"{user}@" if user else "")
    path, _, query = url.raw_path.decode("ascii").partition("?")
    parts = []
    for part in query.split("&") if query else []:
        name, sep, _ = part.partition("=")
        parts.append(f"{name}={_MASK}" if sep and _is_secret(unquote(name)) else part)
    target = f"{path}?{'&'.join(parts)}" if parts else path
    return f"{url.scheme}://{userinfo}{url.netloc.decode('ascii')}{target}"


def _describe_request(request: httpx.Request) -> bytes:
    lines = [f"> {request.method} {_masked_url(request.url)}"]
    for raw_name, raw_value in request.headers.raw:  # raw: names as the job spelled them
        name = raw_name.decode("ascii")
        value = _MASK if _is_secret(name) else raw_value.decode("utf-8", errors="replace")
        lines.append(f"> {name}: {value}")
    if request.content:
        lines.append(f"> ({len(request.content)} bytes of body)")
    return ("\n".join(lines) + "\n").encode()


# --------------------------------------------------------------------------- clients


class _TlsFileError(Exception):
    """A TLS file exists but cannot be loaded; the message names its config key."""


async def _client_key(tls: _Tls) -> _ClientKey | str:
    """The cache key of a TLS setting, or why its files cannot be used."""
    versions: list[tuple[str, int, int, int]] = []
    for key, path in tls.files():
        try:
            st = await anyio.Path(path).stat()
        except FileNotFoundError:
            return f'http: {key} "{path}" does not exist: fix the path or remove {key}'
        except OSError as exc:
            return f'http: cannot read {key} "{path}": {exc.strerror or exc}'
        versions.append((path, st.st_ino, st.st_size, st.st_mtime_ns))
    return _ClientKey(tls, tuple(versions))


def _ssl_context(tls: _Tls) -> ssl.SSLContext:
    if tls.root_cas_file is not None:
        try:
            ctx = ssl.create_default_context(cafile=tls.root_cas_file)
        except (OSError, ValueError) as exc:
            raise _TlsFileError(f'http: cannot load tlsRootCAsFile "{tls.root_cas_file}": {exc}') from None
    else:
        ctx = httpx.create_ssl_context()
    if tls.no_verify_peer:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if tls.certificate_file is not None:
        try:
            ctx.load_cert_chain(tls.certificate_file, tls.certificate_key_file)
        except (OSError, ValueError) as exc:
            files = f'tlsCertificateFile "{tls.certificate_file}"'
            if tls.certificate_key_file:
                files += f' with tlsCertificateKeyFile "{tls.certificate_key_file}"'
            raise _TlsFileError(f"http: cannot load {files}: {exc}") from None
    return ctx


async def _new_client(tls: _Tls, egress: EgressPolicy) -> httpx.AsyncClient:
    # Loading CA bundles reads files and parses certificates: kept off the event loop.
    ctx = await anyio.to_thread.run_sync(_ssl_context, tls)
    limits = httpx.Limits(keepalive_expiry=KEEPALIVE_EXPIRY)
    return httpx.AsyncClient(
        # Every connection, redirects included, is checked against the egress policy where it is opened.
        transport=guarded_transport(egress, ctx, limits),
        # No per-phase limits: the executor bounds the whole exchange (body included) with `timeout`.
        timeout=httpx.Timeout(None),
        follow_redirects=True,  # as Go's http.Client does
        max_redirects=10,
    )


@dataclass(eq=False)
class _Lease:
    client: httpx.AsyncClient
    users: int = 0
    evicted: bool = False


class _ClientPool:
    """An LRU of clients; an evicted client is closed as soon as no run uses it any more."""

    def __init__(self, size: int, egress: EgressPolicy) -> None:
        self.size = size
        self.egress = egress
        self._cached: OrderedDict[_ClientKey, _Lease] = OrderedDict()
        self._evicted_in_use: set[_Lease] = set()
        self._lock = anyio.Lock()

    @asynccontextmanager
    async def client(self, key: _ClientKey) -> AsyncIterator[httpx.AsyncClient]:
        lease = await self._acquire(key)
        try:
            yield lease.client
        finally:
            lease.users -= 1
            if lease.evicted and lease.users == 0:
                self._evicted_in_use.discard(lease)
                with anyio.CancelScope(shield=True):
                    await lease.client.aclose()

    async def _acquire(self, key: _ClientKey) -> _Lease:
        async with self._lock:
            lease = self._cached.get(key)
            if lease is None:
                lease = _Lease(await _new_client(key.tls, self.egress))
                self._cached[key] = lease
                await self._evict_beyond_size()
            self._cached.move_to_end(key)
            lease.users += 1  # under the lock: it cannot be evicted and closed before its use
            return lease

    async def _evict_beyond_size(self) -> None:
        while len(self._cached) > self.size:
            _, oldest = self._cached.popitem(last=False)
            oldest.evicted = True
            if oldest.users:
                self._evicted_in_use.add(oldest)
            else:
                with anyio.CancelScope(shield=True):
                    await oldest.client.aclose()

    async def aclose(self) -> None:
        leases = [*self._cached.values(), *self._evicted_in_use]
        self._cached.clear()
        self._evicted_in_use.clear()
        with anyio.CancelScope(shield=True):
            for lease in leases:
                lease.evicted = True
                await lease.client.aclose()


# --------------------------------------------------------------------------- the executor


def _status_failure(spec: _Spec, response: httpx.Response) -> str | None:
    status = response.status_code
    if spec.expect_codes is not None:
        if status in spec.expect_codes:
            return None
        return f"http: expected status in {sorted(spec.expect_codes)}, got {status}"
    if status < 400:
        return None
    reason = f"{status} {response.reason_phrase}".strip()
    return f"http: server answered {reason} (set expectCode to accept other statuses)"


def _search(pattern: regex.Pattern[str], text: str, timeout: float) -> bool:
    # concurrent: the search lets go of the GIL, so the event loop runs on while it backtracks.
    return pattern.search(text, timeout=timeout, concurrent=True) is not None


async def _body_failure(spec: _Spec, head: bytearray, total: int, time_limit: float) -> str | None:
    pattern = spec.expect_body
    if pattern is None:
        return None
    text = head.decode("utf-8", errors="replace")
    try:
        if await anyio.to_thread.run_sync(_search, pattern, text, time_limit):
            return None
    except TimeoutError:
        return (
            f'http: expectBody "{pattern.pattern}" took longer than {time_limit:g}s on the response body: '
            "simplify the pattern (nested repetitions such as (a+)+ or (a|aa)+ backtrack without end)"
        )
    reason = f'http: body does not match expectBody "{pattern.pattern}"'
    if total > len(head):
        reason += f" (only the first {len(head)} of {total} bytes were searched)"
    return reason


def _auth_for(request: httpx.Request) -> httpx.Auth:
    """As Go does: credentials in the url become basic auth, unless the job sets Authorization itself."""
    url = request.url
    if "Authorization" in request.headers or not (url.username or url.password):
        return httpx.Auth()  # sends the request as built
    return httpx.BasicAuth(url.username, url.password)


def _format_timeout(timeout: timedelta | None) -> str:
    return format_go_duration(timeout) if timeout is not None else "0s"


def _reason(exc: BaseException) -> str:
    """The most telling text of an error chain: httpx says "All connection attempts failed" for a refusal."""
    text = str(exc) or type(exc).__name__
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLError):
            return text  # its errno is OpenSSL's, not the system's; the text says it all
        if isinstance(cause, OSError) and cause.errno is not None and cause.errno > 0:
            return os.strerror(cause.errno)
        cause = cause.__cause__ or cause.__context__
    return text


def _transport_failure(exc: Exception, url: httpx.URL) -> str:
    where = _masked_url(url)
    text = _reason(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return (
            f"http: TLS verification of {where} failed ({text}): set tlsRootCAsFile to the CA that "
            "signed the server's certificate, or tlsNoVerifyPeer=true to skip the check"
        )
    if isinstance(exc, httpx.ConnectError):
        return f"http: cannot connect to {where}: {text}"
    if isinstance(exc, httpx.TooManyRedirects):
        return f"http: {where}: more than 10 redirects"
    return f"http: request to {where} failed: {text}"


class HttpExecutor:
    """Makes one HTTP request per execution; success is decided by the status and expectBody."""

    name = "http"

    def __init__(
        self,
        *,
        client_cache_size: int = CLIENT_CACHE_SIZE,
        expect_body_limit: int = EXPECT_BODY_LIMIT,
        expect_body_timeout: float = EXPECT_BODY_TIMEOUT,
        egress: EgressPolicy | None = None,
    ) -> None:
        self.expect_body_limit = expect_body_limit
        self.expect_body_timeout = expect_body_timeout
        self._clients = _ClientPool(client_cache_size, egress or EgressPolicy())

    def configure(self, settings: Settings) -> None:
        """Take the node's egress policy (--http-allow/--http-deny); called once, before the first run."""
        self._clients = _ClientPool(self._clients.size, EgressPolicy.from_settings(settings))

    def validate(self, config: Mapping[str, str]) -> None:
        _parse(config)

    async def aclose(self) -> None:
        """Close every cached client and its connections; the agent calls it at shutdown."""
        await self._clients.aclose()

    async def execute(
        self, config: Mapping[str, str], ctx: ExecutionContext, output: OutputSink
    ) -> ExecutorResult:
        try:
            spec = _parse(config)
        except ConfigError as exc:
            return ExecutorResult(False, str(exc))
        key = await _client_key(spec.tls)
        if isinstance(key, str):
            return ExecutorResult(False, key)
        try:
            async with self._clients.client(key) as client:
                request = client.build_request(
                    spec.method, spec.url, headers=_request_headers(spec, ctx), content=spec.body
                )
                if spec.debug:
                    await output.write(_describe_request(request))
                with anyio.move_on_after(spec.timeout.total_seconds() if spec.timeout else None):
                    return await self._exchange(client, request, spec, output)
                return ExecutorResult(False, f"http: request timed out after {_format_timeout(spec.timeout)}")
        except _TlsFileError as exc:
            return ExecutorResult(False, str(exc))

    async def _exchange(
        self, client: httpx.AsyncClient, request: httpx.Request, spec: _Spec, output: OutputSink
    ) -> ExecutorResult:
        try:
            response = await client.send(request, stream=True, auth=_auth_for(request))
        except EgressDenied as exc:
            return ExecutorResult(False, f"http: {exc}")
        except (httpx.HTTPError, OSError) as exc:
            return ExecutorResult(False, _transport_failure(exc, request.url))
        try:
            if spec.debug:
                await output.write(f"< {response.status_code} {response.reason_phrase}\n".encode())
            head, total = await self._stream_body(response, spec, output)
        except (httpx.HTTPError, OSError) as exc:
            return ExecutorResult(False, _transport_failure(exc, request.url))
        finally:
            # Shielded: a cancelled run must still give its connection back (or close it), never leak it.
            with anyio.CancelScope(shield=True):
                await response.aclose()
        failure = _status_failure(spec, response) or await _body_failure(
            spec, head, total, self.expect_body_timeout
        )
        return ExecutorResult(failure is None, failure or "")

    async def _stream_body(
        self, response: httpx.Response, spec: _Spec, output: OutputSink
    ) -> tuple[bytearray, int]:
        """Forward the body to the sink as it arrives; keep its start only if expectBody needs it."""
        keep = self.expect_body_limit if spec.expect_body is not None else 0
        head = bytearray()
        total = 0
        async for chunk in response.aiter_bytes():
            total += len(chunk)
            if len(head) < keep:
                head += chunk[: keep - len(head)]
            await output.write(chunk)
        return head, total
