"""One answer shared by everyone who asks within a moment: the partitions of a server ask the same thing."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import anyio

T = TypeVar("T")


class Recent(Generic[T]):
    """The result of `ask`, asked again only when the last one is `fresh_for` seconds old; callers that come
    while an ask is under way wait for it and share its result."""

    def __init__(self, ask: Callable[[], Awaitable[T]], fresh_for: float) -> None:
        self._ask = ask
        self.fresh_for = fresh_for
        self._lock = anyio.Lock()
        self._asked_at = 0.0
        self._result: tuple[T] | None = None

    async def get(self) -> T:
        async with self._lock:
            if self._result is None or time.monotonic() - self._asked_at >= self.fresh_for:
                self._result = (await self._ask(),)
                self._asked_at = time.monotonic()
            return self._result[0]
