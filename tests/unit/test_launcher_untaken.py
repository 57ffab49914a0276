"""The leader's follow-up of run requests no agent has claimed yet (`Launcher.watch_dispatches`)."""

from __future__ import annotations

from typing import Any, cast

import pytest

from dkron_nats.kv.executions import ExecutionStore
from dkron_nats.leader.launcher import Launcher, Untaken
from dkron_nats.models import Execution, JobSpec, RunRequest

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class ResultArrivesDuringTheRead:
    """The execution store, read while the execution's result is applied (the leader's result processor
    runs alongside the follow-up)."""

    def __init__(self) -> None:
        self.launcher: Launcher | None = None

    async def get(self, job: str, exec_id: str) -> Execution:
        execution = Execution(id=exec_id, job_name=job, group=1, node_name="web1", success=True)
        assert self.launcher is not None
        self.launcher.finished(execution)
        return execution


async def test_a_request_whose_result_comes_while_it_is_checked_does_not_end_the_leader_session() -> None:
    """Seen in a chaos run with 200 jobs a second: the check raised KeyError, which ended the leader's
    session (it stepped down and took over again, three times in ten seconds)."""
    store = ResultArrivesDuringTheRead()
    none = cast(Any, None)
    launcher = Launcher(none, none, none, cast(Any, store), none, "global", none)
    store.launcher = launcher
    job = JobSpec(name="tick", schedule="@every 1s")
    exec_id = "1-_1"
    request = RunRequest(execution=Execution(id="", job_name="tick", group=1), job=job)
    untaken = Untaken(0.0, exec_id, "_1", request)
    key = ExecutionStore.key("tick", exec_id)
    launcher._untaken[key] = untaken
    await launcher._check_untaken(key, untaken)
    assert key not in launcher._untaken
