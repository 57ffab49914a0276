"""The built-in processors, compatible with Dkron's ``processors`` job field (all values strings).

Each one ships a finished execution's output somewhere and, unless ``forward`` is a Go-ParseBool true
value, replaces the stored output with a marker saying where it went:

``log``
    Writes the output between ``----- BEGIN OUTPUT job=<job> execution=<id> -----`` and
    ``----- END OUTPUT -----`` to the agent's stdout (success) or stderr (failure).
``files``
    Writes ``<log_dir>/<execution id>.log``, only under the node's ``--files-processor-root`` (default
    ``<data-dir>/processor-files``): a relative ``log_dir`` is taken under it (empty: the root itself), an
    absolute one must lie inside it, and one that climbs out (``..``, a symbolic link) is refused when the
    job is saved and again where it runs.  Directories are created (0750) and files written (0640) by the
    agent's user; the marker is the file's path.  When the file cannot be written the output is kept and
    a line says why.  Dkron wrote to ``/var/log/dkron`` by default: ``--files-processor-root
    /var/log/dkron`` keeps such jobs working.
``syslog``
    Sends RFC 3164 messages, facility CRON, tag ``dkron`` (info on success, err on failure), to
    ``/dev/log`` or to ``address``: a unix datagram socket path or ``host:port`` for UDP (an extension).
    Each message starts with ``job=<job> execution=<id>:`` so runs can be told apart; long output is
    split into several messages, each under 1 KiB, in order.
``fluent``
    POSTs ``{"host", "job_name", "message"}`` as JSON to Fluent Bit's HTTP input at
    ``http://$FLUENTBIT_HOST:$FLUENTBIT_PORT/$FLUENTBIT_TAG`` (defaults ``localhost``, ``9880``, ``dkron``;
    the agent's environment).  The config keys ``host``, ``port`` and ``tag`` override them (an extension).

They run on the agent that ran the job, after the executor and before the result is published.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote

import anyio.to_thread
import httpx
import msgspec

from dkron_nats.agent.executor import ConfigError, ExecutionContext
from dkron_nats.agent.processor import forward_of
from dkron_nats.config import Settings
from dkron_nats.models import Execution
from dkron_nats.secrets import job_secrets, mask_text, redact

__all__ = [
    "FilesProcessor",
    "FluentProcessor",
    "LogProcessor",
    "ProcessorError",
    "SyslogProcessor",
    "files_log_dir",
    "files_root",
    "syslog_messages",
]


class ProcessorError(RuntimeError):
    """The output could not be shipped; the message says where to and how to fix it."""


def _marked(execution: Execution, config: Mapping[str, str], marker: str) -> Execution:
    """The execution to store: its output stays only when the job asked to forward it."""
    if forward_of(config):
        return msgspec.structs.replace(execution)
    return msgspec.structs.replace(execution, output=marker)


def _logged_output(execution: Execution, ctx: ExecutionContext) -> str:
    """The output as a log destination gets it: the job's secrets masked (again: an earlier processor may
    have added text), and the credentials any log line is cleaned of (URL passwords, tokens)."""
    secrets = job_secrets(ctx.job, ctx.env) if ctx.job is not None else frozenset[str]()
    return mask_text(redact(execution.output, secrets))


# --------------------------------------------------------------------------- log


class LogProcessor:
    """Prints the output to the agent's own stdout (success) or stderr (failure)."""

    name = "log"
    marker = "Output in dkron log"

    def validate(self, config: Mapping[str, str]) -> None:
        """Only `forward`, which never fails (an invalid value means false, as in Dkron)."""

    async def process(
        self, execution: Execution, config: Mapping[str, str], ctx: ExecutionContext
    ) -> Execution:
        shown = msgspec.structs.replace(execution, output=_logged_output(execution, ctx))
        await anyio.to_thread.run_sync(_print_block, shown, abandon_on_cancel=True)
        return _marked(execution, config, self.marker)


def _print_block(execution: Execution) -> None:
    # Looked up at call time: the agent's stdout may have been replaced (as tests do).
    stream = sys.stdout if execution.success else sys.stderr
    output = execution.output
    if output and not output.endswith("\n"):
        output += "\n"
    begin = f"----- BEGIN OUTPUT job={execution.job_name} execution={execution.id} -----\n"
    # One write: blocks of executions finishing together must not interleave.
    stream.write(f"{begin}{output}----- END OUTPUT -----\n")
    stream.flush()


# --------------------------------------------------------------------------- files


FILES_ROOT_NAME = "processor-files"
_DIR_MODE = 0o750
_FILE_MODE = 0o640


def files_root(settings: Settings) -> Path:
    """`--files-processor-root`, or `<data-dir>/processor-files`."""
    return settings.files_processor_root or settings.data_dir / FILES_ROOT_NAME


def files_log_dir(root: Path, config: Mapping[str, str]) -> Path:
    """Where `processors.files.log_dir` writes: under `root` or nowhere (ConfigError naming the key)."""
    log_dir = config.get("log_dir", "") or ""
    if "\0" in log_dir:
        raise ConfigError("files: log_dir contains a NUL character; set processors.files.log_dir to a path")
    path = Path(log_dir)
    if ".." in path.parts:
        raise ConfigError(
            f'files: log_dir "{log_dir}" climbs out with ".."; set processors.files.log_dir to a directory '
            f"under {root} (the node's --files-processor-root), e.g. a relative name"
        )
    if not path.is_absolute():
        return root / path
    if not path.is_relative_to(Path(os.path.abspath(root))):
        raise ConfigError(
            f'files: log_dir "{log_dir}" is outside {root}, the only directory the files processor writes '
            "under: give processors.files.log_dir relative to it, or start the nodes with "
            "--files-processor-root set to a directory that holds it"
        )
    return path


class FilesProcessor:
    """Writes the output to `<log_dir>/<execution id>.log`, under the node's files root only."""

    name = "files"

    def __init__(self, root: Path | None = None) -> None:
        self.root = root if root is not None else files_root(Settings())

    def configure(self, settings: Settings) -> None:
        """Take the node's `--files-processor-root` (called once, before the first run)."""
        self.root = files_root(settings)

    def validate(self, config: Mapping[str, str]) -> None:
        files_log_dir(self.root, config)

    async def process(
        self, execution: Execution, config: Mapping[str, str], ctx: ExecutionContext
    ) -> Execution:
        try:
            # Checked again here: this agent's root may differ from the server's that saved the job.
            path = files_log_dir(self.root, config) / f"{execution.id}.log"
        except ConfigError as exc:
            return msgspec.structs.replace(execution, output=_with_line(execution.output, str(exc)))
        try:
            await anyio.to_thread.run_sync(
                _write_file, self.root, path, execution.output, abandon_on_cancel=True
            )
        except ConfigError as exc:
            return msgspec.structs.replace(execution, output=_with_line(execution.output, str(exc)))
        except OSError as exc:
            # The run's outcome stands; the output stays where the user can still read it.
            note = (
                f"files: could not write {path}: {exc.strerror or exc}; "
                "set processors.files.log_dir to a directory the agent can create and write"
            )
            return msgspec.structs.replace(execution, output=_with_line(execution.output, note))
        return _marked(execution, config, str(path))


def _inside(root: Path, directory: Path) -> None:
    """A symbolic link under the root must not lead the file out of it."""
    real_root, real_dir = os.path.realpath(root), os.path.realpath(directory)
    if os.path.commonpath([real_root, real_dir]) != real_root:
        raise ConfigError(
            f"files: {directory} leads out of {root} (through a symbolic link); "
            "set processors.files.log_dir to a plain directory under it"
        )


def _write_file(root: Path, path: Path, text: str) -> None:
    _inside(root, path.parent)  # before creating anything
    path.parent.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
    _inside(root, path.parent)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, _FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)


def _with_line(output: str, line: str) -> str:
    if output and not output.endswith("\n"):
        output += "\n"
    return f"{output}{line}\n"


# --------------------------------------------------------------------------- syslog


DEFAULT_SYSLOG = "/dev/log"
_CRON = 9
_INFO, _ERR = 6, 3
_MESSAGE_LIMIT = 1023
"""Bytes per datagram: under 1 KiB, which RFC 3164 relays must accept."""
_MIN_TEXT = 256
_SEND_TIMEOUT = 5.0
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class SyslogAddress(NamedTuple):
    unix_path: str | None
    udp: tuple[str, int] | None

    def describe(self) -> str:
        if self.udp is not None:
            return f"{self.udp[0]}:{self.udp[1]}"
        return self.unix_path or ""


class SyslogProcessor:
    """Sends the output to syslog: facility CRON, tag `dkron`."""

    name = "syslog"
    marker = "Output in syslog"

    def validate(self, config: Mapping[str, str]) -> None:
        syslog_address(config)

    async def process(
        self, execution: Execution, config: Mapping[str, str], ctx: ExecutionContext
    ) -> Execution:
        address = syslog_address(config)
        severity = _INFO if execution.success else _ERR
        hostname = None if address.unix_path is not None else socket.gethostname()
        prefix = f"job={execution.job_name} execution={execution.id}: "
        messages = list(syslog_messages(_logged_output(execution, ctx), severity, hostname, prefix))
        try:
            await anyio.to_thread.run_sync(_send_datagrams, address, messages, abandon_on_cancel=True)
        except OSError as exc:
            raise ProcessorError(
                f"syslog: could not send to {address.describe()}: {exc}; check that a syslog daemon "
                "listens there or set processors.syslog.address (a unix socket path or host:port)"
            ) from exc
        return _marked(execution, config, self.marker)


def syslog_address(config: Mapping[str, str]) -> SyslogAddress:
    """`address` as a unix socket path or a UDP host:port; raises ConfigError naming the key."""
    address = config.get("address", "") or DEFAULT_SYSLOG
    if address.startswith("/") and "\0" not in address:
        return SyslogAddress(address, None)
    host, sep, port_text = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if sep and host and port_text.isdigit() and 0 < int(port_text) < 65536:
        return SyslogAddress(None, (host, int(port_text)))
    raise ConfigError(
        f'syslog: address "{address}" is neither a unix socket path (such as /dev/log) nor host:port; '
        "set processors.syslog.address to one of them"
    )


def syslog_messages(text: str, severity: int, hostname: str | None, prefix: str = "") -> Iterator[bytes]:
    """RFC 3164 messages carrying `text` in order, each at most `_MESSAGE_LIMIT` bytes, each after `prefix`.

    Without a hostname it is the local form syslog(3) writes to /dev/log, which the daemon completes.
    """
    now = time.localtime()
    stamp = f"{_MONTHS[now.tm_mon - 1]} {now.tm_mday:2d} {now.tm_hour:02d}:{now.tm_min:02d}:{now.tm_sec:02d}"
    host = f"{hostname} " if hostname else ""
    header = f"<{_CRON * 8 + severity}>{stamp} {host}dkron[{os.getpid()}]: ".encode()
    # A very long job name must still leave room for the text.
    header += prefix.encode()[: _MESSAGE_LIMIT - _MIN_TEXT - len(header)].decode(errors="ignore").encode()
    for chunk in _chunks(text.encode(), _MESSAGE_LIMIT - len(header)):
        yield header + chunk


def _chunks(data: bytes, size: int) -> Iterator[bytes]:
    """Pieces of at most `size` bytes, cut after a newline when one is near, never inside a character."""
    while len(data) > size:
        cut = data.rfind(b"\n", size // 2, size) + 1 or size
        while data[cut] & 0xC0 == 0x80:  # a UTF-8 continuation byte: back to where the character starts
            cut -= 1
        yield data[:cut]
        data = data[cut:]
    yield data


def _send_datagrams(address: SyslogAddress, messages: list[bytes]) -> None:
    with _datagram_socket(address) as sock:
        for message in messages:
            sock.send(message)


def _datagram_socket(address: SyslogAddress) -> socket.socket:
    family: int
    target: str | tuple[object, ...]
    if address.udp is not None:
        family, _, _, _, target = socket.getaddrinfo(*address.udp, type=socket.SOCK_DGRAM)[0]
    else:
        family, target = socket.AF_UNIX, address.unix_path or DEFAULT_SYSLOG
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.settimeout(_SEND_TIMEOUT)  # a stuck daemon must not hold the result forever
        sock.connect(target)
    except OSError:
        sock.close()
        raise
    return sock


# --------------------------------------------------------------------------- fluent


FLUENT_TIMEOUT = 10.0
_FLUENT_DEFAULTS = {"host": "localhost", "port": "9880", "tag": "dkron"}
_FLUENT_ENV = {"host": "FLUENTBIT_HOST", "port": "FLUENTBIT_PORT", "tag": "FLUENTBIT_TAG"}


class FluentProcessor:
    """Posts the output to Fluent Bit's HTTP input."""

    name = "fluent"
    marker = "Output sent to Fluent"

    def validate(self, config: Mapping[str, str]) -> None:
        if "port" in config:
            _port(config["port"], "processors.fluent.port")
        if "tag" in config and not config["tag"]:
            raise ConfigError("fluent: tag is empty; set processors.fluent.tag or leave it out")

    async def process(
        self, execution: Execution, config: Mapping[str, str], ctx: ExecutionContext
    ) -> Execution:
        url = fluent_url(config, os.environ)
        message = _logged_output(execution, ctx)
        body = {"host": ctx.node_name, "job_name": execution.job_name, "message": message}
        try:
            async with httpx.AsyncClient(timeout=FLUENT_TIMEOUT) as client:
                response = await client.post(url, json=body)
        except httpx.HTTPError as exc:
            raise ProcessorError(
                f"fluent: could not post to {url}: {exc!r}; check that Fluent Bit's HTTP input listens "
                "there (FLUENTBIT_HOST, FLUENTBIT_PORT or processors.fluent.host/port)"
            ) from exc
        if response.status_code >= 400:
            raise ProcessorError(f"fluent: {url} answered {response.status_code}: {response.text[:200]}")
        return _marked(execution, config, self.marker)


def fluent_url(config: Mapping[str, str], environ: Mapping[str, str]) -> str:
    """Config keys win over the agent's FLUENTBIT_* variables, which win over the defaults."""
    chosen: dict[str, tuple[str, str]] = {}
    for key, default in _FLUENT_DEFAULTS.items():
        if config.get(key):
            chosen[key] = (config[key], f"processors.fluent.{key}")
        else:
            chosen[key] = (environ.get(_FLUENT_ENV[key]) or default, _FLUENT_ENV[key])
    host = chosen["host"][0]
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal
    port = _port(*chosen["port"])
    tag = quote(chosen["tag"][0], safe="")
    return f"http://{host}:{port}/{tag}"


def _port(text: str, source: str) -> int:
    if text.isdigit() and 0 < int(text) < 65536:
        return int(text)
    raise ConfigError(f'fluent: port "{text}" is not a TCP port (1-65535); fix {source}')
