"""A plugin that raises, or cannot even be loaded, fails its own executions and never the agent."""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import EntryPoint
from typing import Any, cast

import pytest

from dkron_nats.agent import registry as registry_module
from dkron_nats.agent.executor import ExecutionContext, ExecutorResult, OutputBuffer, OutputSink
from dkron_nats.agent.registry import EXECUTORS, PluginRegistry, discover_executors
from dkron_nats.agent.runner import Agent, Running
from dkron_nats.models import Execution, JobSpec

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Exploding:
    name = "boom"

    def validate(self, config: Mapping[str, str]) -> None:
        pass

    async def execute(
        self, config: Mapping[str, str], ctx: ExecutionContext, output: OutputSink
    ) -> ExecutorResult:
        await output.write(b"about to fail\n")
        raise RuntimeError("kaput")


def _agent(executors: PluginRegistry[Any]) -> Agent:
    unused = cast(Any, None)  # the executor boundary touches no NATS
    return Agent(cast(Any, FakeClient()), unused, "n1", unused, executors)


class FakeClient:
    """Only what building an Agent asks of its connection."""

    stats = {"reconnects": 0}

    def new_inbox(self) -> str:
        return "_INBOX.test"


async def test_an_executor_that_raises_fails_its_execution_only() -> None:
    agent = _agent(PluginRegistry({"boom": Exploding()}))
    running = Running(Execution(id="1-n1", job_name="j", group=1), OutputBuffer())
    success, error = await agent._run_executor(JobSpec(name="j", executor="boom"), running, {})
    assert (success, error) == (False, "executor boom failed: kaput")
    assert running.output.text() == "about to fail\n"


async def test_an_unknown_executor_is_named() -> None:
    agent = _agent(PluginRegistry({}))
    running = Running(Execution(id="1-n1", job_name="j", group=1), OutputBuffer())
    success, error = await agent._run_executor(JobSpec(name="j", executor="nosuch"), running, {})
    assert (success, error) == (False, "Specified executor is not present: nosuch")


def test_a_plugin_that_cannot_load_is_left_out(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    broken = EntryPoint(name="broken", value="no_such_module_anywhere:Executor", group=EXECUTORS)
    real = registry_module.entry_points  # type: ignore[attr-defined]

    def with_broken(*, group: str) -> list[EntryPoint]:
        return [*real(group=group), broken] if group == EXECUTORS else list(real(group=group))

    monkeypatch.setattr(registry_module, "entry_points", with_broken)
    found = discover_executors()
    assert "broken" not in found.names()
    assert {"shell", "http", "nats"} <= set(found.names())
    assert "could not load plugin 'broken'" in caplog.text
