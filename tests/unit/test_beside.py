"""Tasks beside an execution run in the agent's task group; stopping them waits until each has ended."""

from __future__ import annotations

import anyio
import pytest

from dkron_nats.agent.beside import Beside

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _renew_until_cancelled(ended: list[str], name: str, started: anyio.Event) -> None:
    started.set()
    try:
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.sleep(0.01)  # a last write on the way out: stop must wait for it
        ended.append(name)


async def test_stop_cancels_the_tasks_and_returns_once_each_has_ended() -> None:
    ended: list[str] = []
    async with anyio.create_task_group() as group:
        beside = Beside(group)
        started = anyio.Event()
        beside.start_soon(_renew_until_cancelled, ended, "lease", started)
        await started.wait()
        beside.start_soon(_renew_until_cancelled, ended, "flusher", anyio.Event())  # stopped before it runs
        with anyio.fail_after(5):
            await beside.stop()
        assert sorted(ended) == ["flusher", "lease"]
        await beside.stop()  # nothing left: returns at once
        group.cancel_scope.cancel()  # the group itself is the agent's: it goes on until the agent stops


async def test_a_task_that_fails_fails_the_group_it_runs_in() -> None:
    async def fail() -> None:
        raise RuntimeError("renewal broke")

    with pytest.raises(ExceptionGroup) as caught:
        async with anyio.create_task_group() as group:
            Beside(group).start_soon(fail)
    assert caught.group_contains(RuntimeError, match="renewal broke")
