"""The shell executor, against real processes.

Every test that starts processes checks that they are all gone before it ends.  Processes orphaned by
a killed shell are reaped by PID 1, which can take a moment, hence the deadlines.
"""

from __future__ import annotations

import asyncio
import base64
import os
import pwd
import shlex
import signal
import sys
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

from dkron_nats.agent.executor import (
    OUTPUT_LIMIT,
    ConfigError,
    ExecutionContext,
    ExecutorResult,
    OutputBuffer,
)
from dkron_nats.agent.shell import ShellExecutor, format_go_duration, parse_mem_limit
from tests.sinks import Collector

pytestmark = pytest.mark.anyio

GONE_DEADLINE = 10.0
"""Orphans are reaped by PID 1; in some containers that takes a couple of seconds."""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


CTX = ExecutionContext(
    job_name="backup",
    execution_id="exec-42",
    node_name="node-a",
    attempt=3,
    scheduled_at=datetime(2024, 5, 1, 12, 30, tzinfo=UTC),
)


async def run(
    config: dict[str, str], executor: ShellExecutor | None = None, within: float = 10.0
) -> tuple[ExecutorResult, str]:
    sink = Collector()
    with anyio.fail_after(within):
        result = await (executor or ShellExecutor()).execute(config, CTX, sink)
    return result, sink.text


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def wait_gone(pids: Iterable[int], within: float = GONE_DEADLINE) -> None:
    pending = set(pids)
    with anyio.fail_after(within):
        while pending:
            pending = {pid for pid in pending if alive(pid)}
            if pending:
                await anyio.sleep(0.05)


def group_members(pgid: int) -> set[int]:
    """Pids in process group `pgid`, zombies included (they are not gone yet)."""
    found: set[int] = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if int(fields[2]) == pgid:
            found.add(int(name))
    return found


async def wait_group(pgid: int, at_least: int) -> set[int]:
    with anyio.fail_after(5):
        while len(members := group_members(pgid)) < at_least:
            await anyio.sleep(0.02)
    return members


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --------------------------------------------------------------------------- exit codes, exec modes


async def test_success() -> None:
    result, out = await run({"command": "echo hello"})
    assert result == ExecutorResult(True)
    assert out == "hello\n"


async def test_non_zero_exit_status() -> None:
    result, _ = await run({"command": "exit 3", "shell": "true"})
    assert result == ExecutorResult(False, "exit status 3")


async def test_killed_by_signal() -> None:
    result, _ = await run({"command": "kill -9 $$", "shell": "true"})
    assert result == ExecutorResult(False, "signal: killed")


async def test_command_not_found_is_a_failed_result() -> None:
    result, _ = await run({"command": "/nonexistent/definitely-not-here arg"})
    assert not result.success
    assert "/nonexistent/definitely-not-here" in result.error


async def test_without_shell_the_command_is_split_not_interpreted() -> None:
    result, out = await run({"command": "echo $HOME 'a  b' \"c d\" | x"})
    assert result.success
    assert out == "$HOME a  b c d | x\n"


@pytest.mark.parametrize("flag", ["true", "1", "t", "True", "TRUE", "T"])
async def test_shell_true_interprets(flag: str) -> None:
    result, out = await run({"command": "echo $HOME | tr a-z A-Z", "shell": flag, "env": "HOME=/home/xyz"})
    assert result.success
    assert out == "/HOME/XYZ\n"


@pytest.mark.parametrize("flag", ["false", "0", "", "yes", "on"])
async def test_shell_non_truthy_means_exec(flag: str) -> None:
    result, out = await run({"command": "echo $HOME", "shell": flag})
    assert result.success
    assert out == "$HOME\n"


async def test_stdout_and_stderr_are_merged_in_order() -> None:
    cmd = "echo one; echo two >&2; echo three; echo four >&2"
    result, out = await run({"command": cmd, "shell": "true"})
    assert result.success
    assert out == "one\ntwo\nthree\nfour\n"


async def test_output_is_streamed_while_the_job_runs() -> None:
    sink = Collector()
    ex = ShellExecutor()
    results: list[ExecutorResult] = []

    async def job() -> None:
        results.append(await ex.execute({"command": "echo $$; exec sleep 300", "shell": "true"}, CTX, sink))

    async with anyio.create_task_group() as tg:
        tg.start_soon(job)
        await sink.wait_for(lambda t: t.endswith("\n"))
        assert not results  # still running, yet its output already arrived
        tg.cancel_scope.cancel()
    await wait_gone([int(sink.text.split()[0])])


# --------------------------------------------------------------------------- environment, cwd, stdin


async def test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DKRON_TEST_INHERITED", "from-agent")
    result, out = await run({"command": "env", "env": "FOO=bar,WITH_EQ=a=b,EMPTY=,"})
    assert result.success
    env = dict(line.split("=", 1) for line in out.splitlines())
    assert "DKRON_TEST_INHERITED" not in env, "the agent's own environment reached the job"
    assert env["PATH"]
    assert env["FOO"] == "bar"
    assert env["WITH_EQ"] == "a=b"
    assert env["EMPTY"] == ""
    assert env["ENV_JOB_NAME"] == "backup"
    assert env["DKRON_JOB_NAME"] == "backup"
    assert env["DKRON_EXECUTION_ID"] == "exec-42"
    assert env["DKRON_ATTEMPT"] == "3"
    assert env["DKRON_NODE"] == "node-a"
    assert env["DKRON_SCHEDULED_TIME"] == "2024-05-01T12:30:00+00:00"


async def test_execution_variables_win_over_config_env() -> None:
    result, out = await run({"command": "printenv DKRON_JOB_NAME", "env": "DKRON_JOB_NAME=spoofed"})
    assert result.success
    assert out == "backup\n"


async def test_cwd(tmp_path: Path) -> None:
    result, out = await run({"command": "pwd", "cwd": str(tmp_path)})
    assert result.success
    assert out.strip() == str(tmp_path)  # pytest's tmp_path is already resolved


async def test_missing_cwd_fails_with_a_clear_message(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    result, out = await run({"command": "pwd", "cwd": str(missing)})
    assert not result.success
    assert str(missing) in result.error
    assert "working directory" in result.error
    assert out == ""


async def test_payload_is_written_to_stdin() -> None:
    payload = b"hello\nworld\x00\xff" * 10_000  # larger than a pipe buffer
    sink = Collector()
    result = await ShellExecutor().execute({"command": "cat", "payload": b64(payload)}, CTX, sink)
    assert result.success
    assert bytes(sink.data) == payload


async def test_payload_not_read_by_the_job_is_not_an_error() -> None:
    result, out = await run({"command": "echo ignored", "payload": b64(b"x" * 1_000_000)})
    assert result.success
    assert out == "ignored\n"


async def test_without_payload_stdin_is_empty() -> None:
    result, out = await run({"command": "cat"}, within=5)
    assert result.success
    assert out == ""


@pytest.mark.skipif(os.geteuid() != 0, reason="su needs root")
async def test_su_runs_as_that_user() -> None:
    nobody = pwd.getpwnam("nobody")
    result, out = await run({"command": "id -u", "su": "nobody", "cwd": "/"})
    assert result.success, result.error
    assert out.strip() == str(nobody.pw_uid)


async def test_su_unknown_user_is_a_failed_result() -> None:
    result, _ = await run({"command": "id -u", "su": "no-such-user-dkron"})
    assert not result.success
    assert "no-such-user-dkron" in result.error


# --------------------------------------------------------------------------- limits and killing


async def test_timeout_kills_the_whole_process_group() -> None:
    sink = Collector()
    cmd = "echo $$; sleep 300 & sleep 300"
    ex = ShellExecutor()
    members: set[int] = set()
    result: ExecutorResult | None = None

    async def job() -> None:
        nonlocal result
        result = await ex.execute({"command": cmd, "shell": "true", "timeout": "1s"}, CTX, sink)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(job)
            await sink.wait_for(lambda t: t.endswith("\n"))
            pgid = int(sink.text.split()[0])
            # The shell and its two sleeps (or a shell that exec'd the last sleep, plus the other).
            members = await wait_group(pgid, at_least=2)
            assert len(members) >= 2
    assert result == ExecutorResult(
        False, f"shell: Job '{cmd}' execution time exceeding defined timeout 1s. Job was killed"
    )
    await wait_gone(members)


async def test_timeout_does_not_fire_for_fast_jobs() -> None:
    result, out = await run({"command": "echo quick", "timeout": "30s"})
    assert result.success
    assert out == "quick\n"


async def test_mem_limit_kills_a_job_using_too_much_memory() -> None:
    code = "import time\nb = b'x' * (200 * 1024 * 1024)\nprint('allocated', flush=True)\ntime.sleep(300)"
    command = shlex.join([sys.executable, "-c", code])
    sink = Collector()
    ex = ShellExecutor()
    with anyio.fail_after(15):
        result = await ex.execute({"command": command, "mem_limit": "50MB"}, CTX, sink)
    assert not result.success
    assert "memory limit exceeded" in result.error
    assert "limit is 52428800 bytes" in result.error


async def test_mem_limit_lets_a_small_job_finish() -> None:
    result, out = await run({"command": "echo small", "mem_limit": "1GB"})
    assert result.success
    assert out == "small\n"


async def _start_and_cancel(ex: ShellExecutor, command: str) -> tuple[bool, int, set[int]]:
    """Start `command` (which prints its pid first), cancel it and return (returned?, pid, group)."""
    sink = Collector()
    returned = False
    members: set[int] = set()

    async def job() -> None:
        nonlocal returned
        await ex.execute({"command": command, "shell": "true"}, CTX, sink)
        returned = True

    async with anyio.create_task_group() as tg:
        tg.start_soon(job)
        await sink.wait_for(lambda t: t.endswith("\n"))
        pgid = int(sink.text.split()[0])
        members = await wait_group(pgid, at_least=3)
        tg.cancel_scope.cancel()
    return returned, pgid, members


async def test_cancellation_kills_the_group_and_reraises() -> None:
    with anyio.fail_after(10):
        returned, leader, members = await _start_and_cancel(
            ShellExecutor(), "echo $$; sleep 300 & sleep 300 & wait"
        )
    assert not returned  # execute() re-raised the cancellation instead of returning a result
    assert not alive(leader)  # the job's own process was killed and reaped before execute() ended
    await wait_gone(members)


async def test_cancellation_escalates_to_sigkill_after_the_grace_period() -> None:
    ex = ShellExecutor(kill_grace=0.3)
    # SIG_IGN is inherited, so neither the shell nor its sleeps react to SIGTERM.
    with anyio.fail_after(10):
        returned, leader, members = await _start_and_cancel(
            ex, "trap '' TERM; echo $$; sleep 300 & sleep 300 & wait"
        )
    assert not returned
    assert not alive(leader)
    await wait_gone(members)


async def test_asyncio_task_cancel_kills_the_group_and_reraises() -> None:
    sink = Collector()
    task = asyncio.create_task(
        ShellExecutor().execute({"command": "echo $$; exec sleep 300", "shell": "true"}, CTX, sink)
    )
    await sink.wait_for(lambda t: t.endswith("\n"))
    pid = int(sink.text.split()[0])
    task.cancel()
    with anyio.fail_after(10), pytest.raises(asyncio.CancelledError):
        await task
    assert not alive(pid)


async def test_background_children_are_killed_when_the_job_exits() -> None:
    result, out = await run({"command": "sleep 300 & echo $!", "shell": "true"}, within=5)
    assert result.success
    await wait_gone([int(out.split()[0])])


async def test_a_daemonised_child_holding_the_pipe_does_not_block_the_execution() -> None:
    ex = ShellExecutor(drain_timeout=0.3)
    # setsid leaves the job's session and group: it survives, holding the output pipe open.
    result, out = await run({"command": "setsid sleep 300 & echo $!", "shell": "true"}, ex, within=5)
    daemon = int(out.split()[0])
    try:
        assert result.success
    finally:
        os.kill(daemon, signal.SIGKILL)
        await wait_gone([daemon])


async def test_large_output_keeps_the_tail() -> None:
    code = f"import sys\nsys.stdout.write('x' * {OUTPUT_LIMIT + 50_000})\nsys.stdout.write('THE-END')"
    buffer = OutputBuffer()
    with anyio.fail_after(10):
        result = await ShellExecutor().execute(
            {"command": shlex.join([sys.executable, "-c", code])}, CTX, buffer
        )
    assert result.success
    assert buffer.truncated
    text = buffer.text()
    assert OUTPUT_LIMIT - 10 <= len(text) <= OUTPUT_LIMIT
    assert text.startswith("[output truncated: the first ")
    assert "bytes were dropped; the last" in text.splitlines()[0]
    assert text.endswith("x" * 100 + "THE-END")


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({}, "Command missing"),
        ({"command": ""}, "Command missing"),
        ({"command": "   "}, "Command missing"),
        ({"command": "echo 'unclosed"}, "command"),
        ({"command": "true", "timeout": "30"}, "shell: Error parsing job timeout: "),
        ({"command": "true", "timeout": "soon"}, "timeout"),
        ({"command": "true", "timeout": "-5s"}, "timeout"),
        ({"command": "true", "mem_limit": "12XB"}, "mem_limit"),
        ({"command": "true", "mem_limit": "lots"}, "mem_limit"),
        ({"command": "true", "mem_limit": "0"}, "mem_limit"),
        ({"command": "true", "payload": "!!"}, "payload"),
        ({"command": "true", "payload": "abc"}, "payload"),
        ({"command": "true", "env": "NOEQUALS"}, "env"),
        ({"command": "true", "env": "A=1,NOEQUALS"}, "env"),
        ({"command": "true", "env": "=value"}, "env"),
        ({"command": "true", "su": "a:b:c"}, "su"),
        ({"command": "true", "su": "user:"}, "su"),
        ({"command": "true", "su": ":group"}, "su"),
    ],
)
def test_validate_rejects(config: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ShellExecutor().validate(config)


def test_validate_timeout_message() -> None:
    with pytest.raises(ConfigError) as info:
        ShellExecutor().validate({"command": "true", "timeout": "30"})
    assert str(info.value).startswith("shell: Error parsing job timeout: ")


@pytest.mark.parametrize(
    "config",
    [
        {"command": "true"},
        {"command": "true", "shell": "whatever"},
        {"command": "true", "timeout": "1h30m", "mem_limit": "512mb", "env": "A=1,B=2"},
        {"command": "true", "timeout": "0", "mem_limit": "1048576", "payload": b64(b"data")},
        {"command": "true", "su": "nobody:nogroup", "cwd": "/tmp"},
    ],
)
def test_validate_accepts(config: dict[str, str]) -> None:
    ShellExecutor().validate(config)


async def test_execute_raises_config_error_for_a_bad_config() -> None:
    with pytest.raises(ConfigError, match="Command missing"):
        await ShellExecutor().execute({}, CTX, Collector())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", 1),
        ("100B", 100),
        ("1k", 1024),
        ("2KB", 2048),
        ("50MB", 50 * 1024**2),
        ("1.5g", int(1.5 * 1024**3)),
        ("1TB", 1024**4),
        ("", None),
    ],
)
def test_parse_mem_limit(text: str, expected: int | None) -> None:
    assert parse_mem_limit(text) == expected


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0, "0s"),
        (0.0005, "500µs"),
        (0.25, "250ms"),
        (1, "1s"),
        (1.5, "1.5s"),
        (60, "1m0s"),
        (90, "1m30s"),
        (3600, "1h0m0s"),
        (5400.25, "1h30m0.25s"),
    ],
)
def test_format_go_duration(seconds: float, expected: str) -> None:
    assert format_go_duration(timedelta(seconds=seconds)) == expected
