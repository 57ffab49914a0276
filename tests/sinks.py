"""Output sinks for executor tests."""

from __future__ import annotations

from collections.abc import Callable

import anyio


class Collector:
    """An OutputSink that lets a test wait for a condition on what was written so far."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.chunks = 0
        self._changed = anyio.Event()

    async def write(self, data: bytes) -> None:
        self.data += data
        self.chunks += 1
        self._changed.set()
        self._changed = anyio.Event()

    @property
    def text(self) -> str:
        return self.data.decode()

    async def wait_for(self, predicate: Callable[[str], bool], within: float = 5.0) -> None:
        with anyio.fail_after(within):
            while not predicate(self.text):
                await self._changed.wait()
