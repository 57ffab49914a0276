"""Tasks that live beside one execution (its lease renewal, its live output's flusher).

They run in the agent's long-lived task group, each in its own cancel scope, rather than in a task group of
the execution's own: most executions have none, and a task group per execution costs more than running a
noop job. `stop` cancels them and returns once every one has ended, as leaving a task group would.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVarTuple

import anyio
from anyio.abc import TaskGroup

Args = TypeVarTuple("Args")


class Beside:
    __slots__ = ("_group", "_tasks")

    def __init__(self, group: TaskGroup) -> None:
        self._group = group
        """The agent's task group: an exception of a task beside propagates there, as it did before."""
        self._tasks: list[tuple[anyio.CancelScope, anyio.Event]] = []

    def start_soon(self, func: Callable[[*Args], Awaitable[object]], *args: *Args) -> None:
        scope, ended = anyio.CancelScope(), anyio.Event()
        self._tasks.append((scope, ended))
        self._group.start_soon(self._run, scope, ended, func, *args)

    @staticmethod
    async def _run(
        scope: anyio.CancelScope,
        ended: anyio.Event,
        func: Callable[[*Args], Awaitable[object]],
        *args: *Args,
    ) -> None:
        try:
            with scope:
                await func(*args)
        finally:
            ended.set()

    async def stop(self) -> None:
        """Cancel the tasks and wait until they have ended (the wait itself cannot be cancelled)."""
        tasks, self._tasks = self._tasks, []
        if not tasks:
            return
        for scope, _ in tasks:
            scope.cancel()
        with anyio.CancelScope(shield=True):
            for _, ended in tasks:
                await ended.wait()
