"""Which addresses the http executor and the webhooks may connect to (`--http-allow`, `--http-deny`).

An address is allowed when an `--http-allow` network holds it; otherwise it is refused when an
`--http-deny` network or the built-in list holds it; otherwise it is allowed (jobs legitimately call
internal services).  The built-in list is link-local (169.254.0.0/16, fe80::/10) and AWS's IPv6 metadata
address: where cloud metadata services hand out the machine's credentials.  `--http-allow
169.254.169.254/32` re-opens one of them.

The check is made where a connection is opened, not on the URL: the host name is resolved, every address it
resolves to must be allowed (a name that also resolves to a denied address is refused, so DNS cannot slip
one in), and the connection goes to one of the checked addresses, so the name cannot resolve differently in
between.  Every redirect opens its connection through the same check.  TLS is still verified against the
host name of the URL.  Proxies from the environment (HTTP_PROXY, ...) are not used: through a proxy the
address finally connected to could not be checked.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio
import httpcore
import httpx

from dkron_nats.config import ConfigError

if TYPE_CHECKING:
    from dkron_nats.config import Settings

__all__ = ["DEFAULT_DENY", "EgressDenied", "EgressPolicy", "guarded_transport", "parse_networks"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_DENY: tuple[Network, ...] = (
    ipaddress.ip_network("169.254.0.0/16"),
    ipaddress.ip_network("fe80::/10"),
    ipaddress.ip_network("fd00:ec2::254/128"),
)
"""Refused unless `--http-allow` holds them: cloud metadata services answer there."""


class EgressDenied(Exception):
    """A connection the policy refuses; the message names the address and the flag that allows it."""


def parse_networks(flag: str, values: Iterable[str]) -> tuple[Network, ...]:
    """`--http-allow`/`--http-deny` values: CIDRs or single addresses, repeated or comma-separated."""
    networks: list[Network] = []
    for value in values:
        for text in (part.strip() for part in value.split(",")):
            if not text:
                continue
            try:
                networks.append(ipaddress.ip_network(text))
            except ValueError as exc:
                raise ConfigError(
                    f"--{flag} {text!r}: {exc}; use a network in CIDR form such as 10.0.0.0/8, "
                    "169.254.169.254/32 or fd00::/8"
                ) from None
    return tuple(networks)


def _unmapped(address: Address) -> Address:
    """::ffff:169.254.169.254 is 169.254.169.254: judged as the IPv4 address it reaches."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _single(address: Address) -> str:
    return f"{address}/{address.max_prefixlen}"


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    allow: tuple[Network, ...] = ()
    deny: tuple[Network, ...] = ()

    @classmethod
    def from_settings(cls, s: Settings) -> EgressPolicy:
        return cls(parse_networks("http-allow", s.http_allow), parse_networks("http-deny", s.http_deny))

    def refusal(self, address: Address) -> str | None:
        """Why `address` may not be connected to, or None when it may."""
        address = _unmapped(address)
        if any(address in network for network in self.allow):
            return None
        for network in self.deny:
            if address in network:
                return f"it is in {network}, which --http-deny refuses"
        for network in DEFAULT_DENY:
            if address in network:
                return f"it is in {network}, refused by default (cloud metadata services answer there)"
        return None

    def check(self, host: str, address: str) -> None:
        """Raise EgressDenied when `address` (what `host` resolved to) is refused."""
        ip = _unmapped(ipaddress.ip_address(address.partition("%")[0]))
        why = self.refusal(ip)
        if why is None:
            return
        name = address if host == address else f"{host} ({address})"
        allow = f"--http-allow {_single(ip)}"
        raise EgressDenied(f"refused to connect to {name}: {why}; to allow it, start the node with {allow}")

    async def resolve(self, host: str, port: int) -> list[str]:
        """Every address `host` resolves to, once all of them are allowed (raises EgressDenied otherwise)."""
        try:
            found = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc.strerror or exc}") from exc
        addresses = list(dict.fromkeys(str(sockaddr[0]) for *_, sockaddr in found))
        for address in addresses:
            self.check(host, address)
        return addresses


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Connects only to addresses the policy allows, and to the very address it checked."""

    def __init__(self, policy: EgressPolicy) -> None:
        self._policy = policy
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            with anyio.fail_after(timeout):
                addresses = await self._policy.resolve(host, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} took longer than {timeout:g}s") from None
        failure: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for address in addresses:  # in the resolver's order, as a plain connect would try them
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        raise failure or httpcore.ConnectError(f"{host} resolved to no address")

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise EgressDenied(f"refused to connect to the unix socket {path}: only TCP is allowed")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _GuardedTransport(httpx.AsyncHTTPTransport):
    def __init__(self, policy: EgressPolicy, ssl_context: ssl.SSLContext, limits: httpx.Limits) -> None:
        super().__init__(verify=ssl_context, limits=limits)
        # httpx takes no network backend: its pool is rebuilt with one (same settings as httpx's own).
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_GuardedBackend(policy),
        )


DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)
"""httpx's own defaults."""


def guarded_transport(
    policy: EgressPolicy, ssl_context: ssl.SSLContext | None = None, limits: httpx.Limits = DEFAULT_LIMITS
) -> httpx.AsyncHTTPTransport:
    """An httpx transport whose every connection (redirects included) goes through `policy`."""
    context = ssl_context if ssl_context is not None else httpx.create_ssl_context()
    return _GuardedTransport(policy, context, limits)
