"""The built-in ``shell`` executor, compatible with Dkron's executor_config.

Config keys (all strings):

``command``
    What to run (required).
``shell``
    A Go ``strconv.ParseBool`` truthy value runs ``/bin/sh -c <command>``; anything else splits the
    command shell-style and executes it directly.
``env``
    ``K1=v1,K2=v2``: added to the job's base environment (PATH, HOME, LANG, TZ, USER, SHELL and the
    agent's ``--job-env-passthrough`` names; never the agent's other variables, see jobenv.py).  A run's
    parameters, then the execution variables (``ENV_JOB_NAME``, ``DKRON_*``) are added last and win.
``cwd``
    Working directory.
``timeout``
    A Go duration; on expiry the job's whole process group is killed.  ``0`` means no timeout.
``mem_limit``
    Bytes, or a number with a 1024-based ``B``/``K``/``KB``/``M``/``MB``/``G``/``GB``/``T``/``TB`` suffix;
    the resident memory of the whole process tree is polled and the job is killed when over it.
``su``
    ``user[:group]`` to run as (the agent must be root).  The job gets that user's groups only (for a
    numeric uid without a passwd entry: the group of the same number, no supplementary groups).
``payload``
    Base64 data written to the job's stdin; without it stdin is ``/dev/null``.

The job runs in a session (and process group) of its own.  When it ends, for whatever reason, every
process left in that group is killed, so nothing outlives an execution unless it deliberately escaped
with ``setsid``; output held open by such an escaped process is read for a short bounded time only.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import grp
import os
import pwd
import re
import shlex
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import NamedTuple

import anyio
import anyio.abc
import anyio.to_thread

from dkron_nats.agent.executor import ConfigError, ExecutionContext, ExecutorResult, OutputSink
from dkron_nats.agent.jobenv import as_account, base_environment
from dkron_nats.durations import parse_go_duration

__all__ = ["ShellExecutor", "format_go_duration", "parse_mem_limit"]

_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
"""The values Go's strconv.ParseBool reads as true."""

_CHUNK = 64 * 1024
_PIPELINE_CHUNKS = 16
"""Chunks read ahead of a slow OutputSink (backpressure beyond that)."""

_MEM_UNITS = {
    "": 1,
    "B": 1,
    "K": 1024,
    "KB": 1024,
    "M": 1024**2,
    "MB": 1024**2,
    "G": 1024**3,
    "GB": 1024**3,
    "T": 1024**4,
    "TB": 1024**4,
}
_MEM_RE = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*([a-zA-Z]*)\s*$")
_PROC = "/proc"
_HAVE_PROC = os.path.isdir(f"{_PROC}/self")


@dataclass(frozen=True, slots=True)
class _Spec:
    """A validated executor_config."""

    command: str
    argv: list[str]
    env: dict[str, str]
    cwd: str | None
    timeout: timedelta | None
    mem_limit: int | None
    su_user: str | None
    su_group: str | None
    payload: bytes | None


class _Proc(NamedTuple):
    pid: int
    ppid: int
    pgrp: int
    sid: int
    zombie: bool
    rss_pages: int


class _Credentials(NamedTuple):
    uid: int
    gid: int
    extra_groups: list[int] | None
    account: pwd.struct_passwd | None = None


class _RunState:
    def __init__(self) -> None:
        self.kill_reason: str | None = None
        self.mem_used = 0


# --------------------------------------------------------------------------- config parsing


def _parse_bool(value: str) -> bool:
    return value in _TRUE


def _parse_env(value: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for entry in value.split(","):
        if not entry.strip():
            continue
        key, sep, val = entry.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f'shell: invalid env entry "{entry}": expected KEY=value (env is a comma-separated list)'
            )
        env[key.strip()] = val
    return env


def _parse_timeout(value: str) -> timedelta | None:
    if not value.strip():
        return None
    try:
        td = parse_go_duration(value)
    except ValueError as exc:
        raise ConfigError(f"shell: Error parsing job timeout: {exc}", key="timeout") from None
    if td < timedelta(0):
        raise ConfigError(f'shell: Error parsing job timeout: negative duration "{value}"', key="timeout")
    return td if td > timedelta(0) else None


def parse_mem_limit(value: str) -> int | None:
    """Parse a ``mem_limit`` ("512MB", "1g", "1048576") into bytes; empty means no limit."""
    if not value.strip():
        return None
    m = _MEM_RE.match(value)
    unit = m.group(2).upper() if m else ""
    if m is None or unit not in _MEM_UNITS:
        raise ConfigError(
            f'shell: invalid mem_limit "{value}": expected bytes or a number followed by '
            "B, K, KB, M, MB, G, GB, T or TB"
        )
    limit = int(float(m.group(1)) * _MEM_UNITS[unit])
    if limit <= 0:
        raise ConfigError(f'shell: invalid mem_limit "{value}": must be greater than zero')
    return limit


def _parse_payload(value: str) -> bytes | None:
    if not value:
        return None
    try:
        # Go's base64.StdEncoding ignores line breaks; anything else must be valid.
        return base64.b64decode(value.replace("\r", "").replace("\n", ""), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(f"shell: invalid payload: not valid base64 ({exc})") from None


def _parse_su(value: str) -> tuple[str | None, str | None]:
    if not value.strip():
        return None, None
    user, sep, group = value.strip().partition(":")
    if not user or (sep and not group) or ":" in group:
        raise ConfigError(f'shell: invalid su "{value}": expected user or user:group')
    return user, (group or None)


_EXEC_KEYS = ("command", "env", "cwd", "su")
"""Keys that reach exec(2), where a NUL cannot be passed: refused when the job is saved, not when it runs."""


def _refuse_nul(config: Mapping[str, str]) -> None:
    for key in _EXEC_KEYS:
        if "\0" in (config.get(key, "") or ""):
            raise ConfigError(f"shell: executor_config.{key} contains a NUL character: remove it", key=key)


def _parse(config: Mapping[str, str]) -> _Spec:
    _refuse_nul(config)
    command = config.get("command", "") or ""
    if not command.strip():
        raise ConfigError("shell: Command missing", key="command")
    if _parse_bool(config.get("shell", "") or ""):
        argv = ["/bin/sh", "-c", command]
    else:
        try:
            argv = shlex.split(command)
        except ValueError as exc:
            raise ConfigError(f"shell: cannot parse command: {exc}", key="command") from None
        if not argv:
            raise ConfigError("shell: Command missing", key="command")
    su_user, su_group = _parse_su(config.get("su", "") or "")
    return _Spec(
        command=command,
        argv=argv,
        env=_parse_env(config.get("env", "") or ""),
        cwd=(config.get("cwd", "") or None),
        timeout=_parse_timeout(config.get("timeout", "") or ""),
        mem_limit=parse_mem_limit(config.get("mem_limit", "") or ""),
        su_user=su_user,
        su_group=su_group,
        payload=_parse_payload(config.get("payload", "") or ""),
    )


# --------------------------------------------------------------------------- formatting


def _frac(value: int, prec: int) -> str:
    whole, frac = divmod(value, 10**prec)
    digits = f"{frac:0{prec}d}".rstrip("0")
    return f"{whole}.{digits}" if digits else str(whole)


def format_go_duration(td: timedelta) -> str:
    """Render a duration as Go's ``time.Duration.String`` does ("1m0s", "1.5s", "500ms")."""
    ns = ((td.days * 86400 + td.seconds) * 1_000_000 + td.microseconds) * 1000
    sign = "-" if ns < 0 else ""
    u = abs(ns)
    if u == 0:
        return "0s"
    if u < 1000:
        return f"{sign}{u}ns"
    if u < 1_000_000:
        return f"{sign}{_frac(u, 3)}µs"
    if u < 1_000_000_000:
        return f"{sign}{_frac(u, 6)}ms"
    whole_secs = u // 1_000_000_000
    out = _frac(whole_secs % 60 * 1_000_000_000 + u % 1_000_000_000, 9) + "s"
    minutes = whole_secs // 60
    if minutes:
        out = f"{minutes % 60}m{out}"
        if minutes // 60:
            out = f"{minutes // 60}h{out}"
    return sign + out


def _exit_error(returncode: int) -> str:
    """Go's ``*exec.ExitError`` text: "exit status 3", "signal: killed"."""
    if returncode >= 0:
        return f"exit status {returncode}"
    signum = -returncode
    try:
        name = signal.strsignal(signum)
    except ValueError:
        name = None
    return f"signal: {name.lower()}" if name else f"signal: {signum}"


# --------------------------------------------------------------------------- /proc helpers


def _scan_procs() -> list[_Proc]:
    procs: list[_Proc] = []
    try:
        names = os.listdir(_PROC)
    except OSError:
        return procs
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"{_PROC}/{name}/stat", "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        # The command name may itself contain spaces and parentheses: split after the last ')'.
        fields = data[data.rfind(b")") + 2 :].split()
        try:
            procs.append(
                _Proc(
                    pid=int(name),
                    ppid=int(fields[1]),
                    pgrp=int(fields[2]),
                    sid=int(fields[3]),
                    zombie=fields[0] in (b"Z", b"X"),
                    rss_pages=int(fields[21]),
                )
            )
        except (IndexError, ValueError):
            continue
    return procs


def _job_procs(leader: int, with_descendants: bool) -> list[_Proc]:
    """Live processes of the job: its session and process group, plus descendants of its members.

    Descendants are followed only while the leader is known to be alive; once it has been reaped its
    pid could in principle be reused.
    """
    procs = [p for p in _scan_procs() if not p.zombie]
    members = {p.pid: p for p in procs if p.sid == leader or p.pgrp == leader}
    if with_descendants:
        children: dict[int, list[_Proc]] = {}
        for p in procs:
            children.setdefault(p.ppid, []).append(p)
        todo = [leader, *members]
        while todo:
            for child in children.get(todo.pop(), []):
                if child.pid not in members:
                    members[child.pid] = child
                    todo.append(child.pid)
    me = os.getpid()
    return [p for p in members.values() if p.pid > 1 and p.pid != me]


def _job_rss(leader: int) -> int:
    page = os.sysconf("SC_PAGE_SIZE")
    return sum(p.rss_pages for p in _job_procs(leader, with_descendants=True)) * page


def _signal_pids(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


# --------------------------------------------------------------------------- the executor


class ShellExecutor:
    """Runs a command, optionally through ``/bin/sh``, in a process group of its own."""

    name = "shell"

    def __init__(
        self,
        *,
        kill_grace: float = 2.0,
        drain_timeout: float = 1.0,
        mem_poll_interval: float = 1.0,
    ) -> None:
        self.kill_grace = kill_grace
        """Seconds between SIGTERM and SIGKILL when the execution is cancelled."""
        self.drain_timeout = drain_timeout
        """Seconds output is still read after the job exited and its group was killed."""
        self.mem_poll_interval = mem_poll_interval
        """Seconds between two memory measurements when mem_limit is set."""

    def validate(self, config: Mapping[str, str]) -> None:
        _parse(config)

    async def execute(
        self, config: Mapping[str, str], ctx: ExecutionContext, output: OutputSink
    ) -> ExecutorResult:
        spec = _parse(config)

        if spec.cwd is not None and not await anyio.Path(spec.cwd).is_dir():
            return ExecutorResult(
                False, f'shell: working directory "{spec.cwd}" does not exist or is not a directory'
            )

        creds = _Credentials(-1, -1, None)
        if spec.su_user is not None:
            try:
                creds = _resolve_su(spec.su_user, spec.su_group)
            except LookupError as exc:
                return ExecutorResult(False, f"shell: {exc.args[0]}")
        env = base_environment(ctx.env_passthrough)
        if spec.su_user is not None:
            env = as_account(env, creds.account, creds.uid)
        env.update(spec.env)
        env.update(ctx.environment())

        try:
            # Shielded so that a cancellation cannot lose a started child: it is handled below.
            with anyio.CancelScope(shield=True):
                proc = await anyio.open_process(
                    spec.argv,
                    stdin=subprocess.PIPE if spec.payload is not None else subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    cwd=spec.cwd,
                    env=env,
                    start_new_session=True,
                    user=creds.uid if creds.uid >= 0 else None,
                    group=creds.gid if creds.gid >= 0 else None,
                    extra_groups=creds.extra_groups,
                )
        except FileNotFoundError as exc:
            if exc.filename == spec.cwd:
                return ExecutorResult(False, f'shell: working directory "{spec.cwd}" does not exist')
            return ExecutorResult(False, f'shell: exec: "{spec.argv[0]}": executable file not found')
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            return ExecutorResult(False, f'shell: cannot start "{spec.argv[0]}": {exc}')

        try:
            return await self._supervise(proc, spec, output)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._terminate(proc)
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await proc.aclose()

    # -- running

    async def _supervise(self, proc: anyio.abc.Process, spec: _Spec, output: OutputSink) -> ExecutorResult:
        state = _RunState()
        stdout = proc.stdout
        if stdout is None:  # pragma: no cover - always a pipe
            raise RuntimeError("shell: the job's output pipe is missing")
        send, recv = anyio.create_memory_object_stream[bytes](_PIPELINE_CHUNKS)
        reader_scope = anyio.CancelScope()
        reader_done = anyio.Event()

        async def read() -> None:
            # Reading is decoupled from the sink so that stopping the read never drops data
            # already read: the writer forwards everything that was read.
            try:
                with reader_scope:
                    async with send:
                        while True:
                            try:
                                chunk = await stdout.receive(_CHUNK)
                            except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                                return
                            await send.send(chunk)
            finally:
                reader_done.set()

        async def write() -> None:
            async with recv:
                async for chunk in recv:
                    await output.write(chunk)

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(read)
                tg.start_soon(write)
                async with anyio.create_task_group() as helpers:
                    if spec.payload is not None and proc.stdin is not None:
                        helpers.start_soon(_feed_stdin, proc.stdin, spec.payload)
                    if spec.mem_limit is not None and _HAVE_PROC:
                        helpers.start_soon(self._watch_memory, proc, spec.mem_limit, state)

                    with anyio.move_on_after(spec.timeout.total_seconds() if spec.timeout else None) as tmo:
                        returncode = await proc.wait()
                    if tmo.cancelled_caught:
                        if state.kill_reason is None:
                            state.kill_reason = "timeout"
                        await _signal_job(proc, signal.SIGKILL)
                        returncode = await proc.wait()

                    # Whatever the job left behind in its group goes too. A full /proc sweep (for processes
                    # that left the group) is kept for kills: it costs milliseconds on every execution.
                    if state.kill_reason is None:
                        _killpg(proc.pid, signal.SIGKILL)
                    else:
                        await _signal_job(proc, signal.SIGKILL)
                    helpers.cancel_scope.cancel()

                with anyio.move_on_after(self.drain_timeout):
                    await reader_done.wait()
                reader_scope.cancel()
        except BaseExceptionGroup as group:
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise

        if state.kill_reason == "timeout" and spec.timeout is not None:
            return ExecutorResult(
                False,
                f"shell: Job '{spec.command}' execution time exceeding defined timeout "
                f"{format_go_duration(spec.timeout)}. Job was killed",
            )
        if state.kill_reason == "memory":
            return ExecutorResult(
                False,
                f"shell: Job '{spec.command}' memory limit exceeded: using {state.mem_used} bytes, "
                f"limit is {spec.mem_limit} bytes. Job was killed",
            )
        if returncode == 0:
            return ExecutorResult(True)
        return ExecutorResult(False, _exit_error(returncode))

    async def _watch_memory(self, proc: anyio.abc.Process, limit: int, state: _RunState) -> None:
        while True:
            await anyio.sleep(self.mem_poll_interval)
            if proc.returncode is not None:
                return
            used = await anyio.to_thread.run_sync(_job_rss, proc.pid)
            if used > limit:
                if state.kill_reason is None:
                    state.kill_reason = "memory"
                    state.mem_used = used
                await _signal_job(proc, signal.SIGKILL)
                return

    async def _terminate(self, proc: anyio.abc.Process) -> None:
        """SIGTERM the job, give it `kill_grace` seconds, then SIGKILL what is left and reap it."""
        await _signal_job(proc, signal.SIGTERM)
        with anyio.move_on_after(self.kill_grace):
            await proc.wait()
            # The leader is gone; let the rest of the group finish its own cleanup too.
            while True:
                if not await anyio.to_thread.run_sync(_job_procs, proc.pid, False):
                    break
                await anyio.sleep(0.05)
        await _signal_job(proc, signal.SIGKILL)
        await proc.wait()


async def _signal_job(proc: anyio.abc.Process, sig: int) -> None:
    """Signal the job's process group, and with /proc also its session and descendants."""
    leader = proc.pid
    _killpg(leader, sig)
    if _HAVE_PROC:
        procs = await anyio.to_thread.run_sync(_job_procs, leader, proc.returncode is None)
        _signal_pids([p.pid for p in procs], sig)


async def _feed_stdin(stdin: anyio.abc.ByteSendStream, payload: bytes) -> None:
    try:
        await stdin.send(payload)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        pass  # the job exited or closed its stdin without reading everything: not an error
    finally:
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            await stdin.aclose()


_MAX_ID = 2**32 - 2
"""The largest uid or gid (2**32 - 1 means "none" to the kernel)."""


def _account(user: str) -> pwd.struct_passwd | None:
    """The passwd entry of a name or uid; None for a numeric uid without one (LookupError for a name)."""
    if user.isdigit() and int(user) > _MAX_ID:
        raise LookupError(f'su: uid "{user}" is out of range (at most {_MAX_ID})')
    try:
        return pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        if user.isdigit():
            return None
        raise LookupError(f'su: unknown user "{user}"') from None


def _resolve_su(user: str, group: str | None) -> _Credentials:
    """Map ``su`` to subprocess credentials; LookupError for unknown names."""
    entry = _account(user)
    uid = entry.pw_uid if entry is not None else int(user)
    # Without a passwd entry: the group of the same number as the uid, never the agent's own.
    gid = entry.pw_gid if entry is not None else uid
    if group is not None:
        if group.isdigit():
            gid = int(group)
        else:
            try:
                gid = grp.getgrnam(group).gr_gid
            except KeyError:
                raise LookupError(f'su: unknown group "{group}"') from None
    extra_groups: list[int] | None = None
    if os.geteuid() == 0:
        # Drop the agent's supplementary groups; take the target user's own (initgroups), or none.
        extra_groups = os.getgrouplist(entry.pw_name, gid) if entry is not None else []
    return _Credentials(uid, gid, extra_groups, entry)
