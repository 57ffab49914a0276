"""What a job's process gets (shell executor, real processes) and what a run may set (parameters)."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import anyio
import pytest

from dkron_nats.agent.executor import ExecutionContext, ExecutorResult
from dkron_nats.agent.jobenv import DEFAULT_PATH, base_environment, passthrough_error
from dkron_nats.agent.shell import ShellExecutor
from dkron_nats.errors import ValidationError
from dkron_nats.models import JobSpec, Parameter
from dkron_nats.parameters import ParameterInput, masked_env, parse_parameters, run_env_error
from tests.sinks import Collector

AGENT_SECRET = "agent-secret-value-1234"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _run(config: dict[str, str], **ctx: object) -> tuple[ExecutorResult, str]:
    context = ExecutionContext(
        job_name="nightly",
        execution_id="exec-1",
        node_name="node-a",
        scheduled_at=datetime(2024, 5, 1, tzinfo=UTC),
        **ctx,  # type: ignore[arg-type]
    )
    sink = Collector()
    with anyio.fail_after(10):
        result = await ShellExecutor().execute(config, context, sink)
    return result, sink.text


def _env(output: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)


@pytest.mark.anyio
async def test_the_job_gets_the_base_environment_not_the_agents(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DKRON_NATS_BOOTSTRAP_TOKEN", AGENT_SECRET)
    monkeypatch.setenv("DB_PASSWORD", AGENT_SECRET)
    monkeypatch.setenv("LANG", "C.UTF-8")
    result, out = await _run({"command": "env", "env": "OWN=job-value"}, env={"DATE": "2024-05-01"})
    assert result.success, result.error
    assert AGENT_SECRET not in out
    env = _env(out)
    assert env["PATH"] == os.environ["PATH"]
    assert env["LANG"] == "C.UTF-8"
    assert env["OWN"] == "job-value"
    assert env["DATE"] == "2024-05-01"
    assert env["DKRON_JOB_NAME"] == "nightly"


@pytest.mark.anyio
async def test_passthrough_names_are_added_but_never_dkron_nats_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SITE_REGION", "eu-west")
    monkeypatch.setenv("DKRON_NATS_MAIL_PASSWORD", AGENT_SECRET)
    passthrough = ("SITE_REGION", "DKRON_NATS_MAIL_PASSWORD")
    result, out = await _run({"command": "env"}, env_passthrough=passthrough)
    assert result.success, result.error
    assert _env(out)["SITE_REGION"] == "eu-west"
    assert AGENT_SECRET not in out


def test_path_has_a_default_and_passthrough_names_are_checked() -> None:
    assert base_environment((), {"HOME": "/root", "OTHER": "x"}) == {"HOME": "/root", "PATH": DEFAULT_PATH}
    assert passthrough_error("SITE_REGION") is None
    assert "DKRON_NATS_" in (passthrough_error("dkron_nats_token") or "")
    assert "not a variable name" in (passthrough_error("A=B") or "")


@pytest.mark.anyio
@pytest.mark.skipif(os.geteuid() != 0, reason="su needs root")
async def test_su_to_an_unknown_uid_keeps_no_group_of_the_agent() -> None:
    result, out = await _run({"command": "id", "su": "12345", "cwd": "/"})
    assert result.success, result.error
    assert "uid=12345" in out
    assert "gid=12345" in out
    assert "0(root)" not in out, out


@pytest.mark.anyio
@pytest.mark.skipif(os.geteuid() != 0, reason="su needs root")
async def test_su_gives_the_target_users_home_user_and_shell() -> None:
    result, out = await _run({"command": "env", "su": "nobody", "cwd": "/"})
    assert result.success, result.error
    env = _env(out)
    assert env["USER"] == "nobody"
    assert env["HOME"] != os.environ.get("HOME")


def test_parameters_accept_a_name_or_an_object_and_refuse_bad_names() -> None:
    parsed = parse_parameters(["DATE", ParameterInput(name="API_TOKEN", secret=True)])
    assert parsed == [Parameter(name="DATE"), Parameter(name="API_TOKEN", secret=True)]
    assert parse_parameters([]) is None
    cases: list[tuple[list[str | ParameterInput], str]] = [
        (["OK", "1BAD"], "parameters[1]"),
        (["DKRON_NATS_AUTH"], "parameters[0]"),
        (["DKRON_EXECUTION_ID"], "parameters[0]"),
        (["A", "A"], "parameters[1]"),
        ([ParameterInput(secret=True)], "parameters[0]"),
    ]
    for bad, field in cases:
        with pytest.raises(ValidationError) as refused:
            parse_parameters(bad)
        assert refused.value.field == field


def test_a_run_may_set_only_declared_names_without_nul() -> None:
    job = JobSpec(name="report", parameters=[Parameter(name="DATE"), Parameter(name="KEY", secret=True)])
    assert run_env_error(job, {"DATE": "2024"}) is None
    refused = run_env_error(job, {"BASH_ENV": "$(id)"})
    assert refused is not None
    assert refused[1] == "BASH_ENV"
    assert "not a parameter of job report" in refused[0]
    assert run_env_error(JobSpec(name="old"), {"DATE": "x"}) is not None, "no parameters: nothing may be set"
    assert run_env_error(job, {"DATE": "a\0b"}) == ("env DATE contains a NUL character: remove it", "DATE")
    assert masked_env(job, {"DATE": "2024", "KEY": "s3cret"}) == {"DATE": "2024", "KEY": "***"}
