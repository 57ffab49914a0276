"""Executors are found through the `dkron_nats.executors` entry-point group (built-ins included)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from importlib.metadata import entry_points

from dkron_nats.agent.executor import Executor

logger = logging.getLogger(__name__)
GROUP = "dkron_nats.executors"


class ExecutorRegistry:
    def __init__(self, executors: Mapping[str, Executor]) -> None:
        self._executors = dict(executors)

    @classmethod
    def discover(cls) -> ExecutorRegistry:
        found: dict[str, Executor] = {}
        for ep in entry_points(group=GROUP):
            try:
                found[ep.name] = ep.load()()
            except Exception:
                # A broken third-party plugin must not stop the node; its jobs fail with a clear message.
                logger.exception("could not load executor plugin %r from %s", ep.name, ep.value)
        return cls(found)

    def names(self) -> list[str]:
        return sorted(self._executors)

    def get(self, name: str) -> Executor | None:
        return self._executors.get(name)

    def validate(self, name: str, config: Mapping[str, str]) -> None:
        """Check a job's executor_config at the API edge; unknown executors are checked at run time."""
        executor = self._executors.get(name)
        if executor is not None:
            executor.validate(config)
