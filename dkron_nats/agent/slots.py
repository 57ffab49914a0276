"""Execution slots of one agent (`--max-concurrent-executions`): at most `limit` executors run at once.

An execution that the agent has claimed waits here for a free slot before its executor starts; waiters are
served in the order they came, and a cancelled waiter simply leaves the queue. Nothing ever fails for lack
of a slot: the run request was answered when the execution was claimed, and the wait counts in its lateness.
A limit of 0 means no limit, as in Dkron: every execution starts at once.

Dispatch on tag subjects (issue 19) will use the same gate the other way round: an agent pulls a request only
while `try_acquire` succeeds.
"""

from __future__ import annotations

from collections import deque

import anyio


class SlotGate:
    def __init__(self, limit: int = 0) -> None:
        if limit < 0:
            raise ValueError(f"an execution slot limit must be 0 (no limit) or more, not {limit}")
        self.limit = limit
        """How many executions may run at once; 0: no limit."""
        self.used = 0
        """Slots held now (by running executions)."""
        self._waiters: deque[anyio.Event] = deque()

    @property
    def queued(self) -> int:
        """Executions waiting for a slot now."""
        return len(self._waiters)

    def try_acquire(self) -> bool:
        """Take a slot if one is free and nobody waits for it already (they came first)."""
        if self._waiters or (self.limit and self.used >= self.limit):
            return False
        self.used += 1
        return True

    async def acquire(self) -> None:
        """Take a slot, waiting in line for one; cancelling the wait leaves the line."""
        if self.try_acquire():
            return
        granted = anyio.Event()
        self._waiters.append(granted)
        try:
            await granted.wait()
        except BaseException:
            if granted.is_set():
                self.release()  # a slot was handed over just as the wait was cancelled: pass it on
            else:
                self._waiters.remove(granted)
            raise

    def release(self) -> None:
        """Give a slot back: the first waiter gets it (so `used` stays), else it is free."""
        if self.used <= 0:
            raise RuntimeError("an execution slot was released that was not held")
        if self._waiters:
            self._waiters.popleft().set()
        else:
            self.used -= 1
