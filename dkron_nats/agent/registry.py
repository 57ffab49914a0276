"""Plugins are found through entry points: `dkron_nats.executors` and `dkron_nats.processors`.

The built-in executors and processors register through the same groups (see pyproject.toml), so a
third-party package is found exactly like them once it is installed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Generic, Protocol, TypeVar

from dkron_nats.agent.executor import Executor
from dkron_nats.agent.processor import Processor
from dkron_nats.config import Settings

logger = logging.getLogger(__name__)
EXECUTORS = "dkron_nats.executors"
PROCESSORS = "dkron_nats.processors"


class Plugin(Protocol):
    name: str

    def validate(self, config: Mapping[str, str]) -> None: ...


P = TypeVar("P", bound=Plugin)


class PluginRegistry(Generic[P]):
    def __init__(self, plugins: Mapping[str, P]) -> None:
        self._plugins = dict(plugins)

    @classmethod
    def discover(cls, group: str) -> PluginRegistry[P]:
        found: dict[str, P] = {}
        for ep in entry_points(group=group):
            try:
                found[ep.name] = ep.load()()
            except Exception:
                # A broken third-party plugin must not stop the node; its jobs fail with a clear message.
                logger.exception("could not load plugin %r (%s) from %s", ep.name, group, ep.value)
        return cls(found)

    def names(self) -> list[str]:
        return sorted(self._plugins)

    def get(self, name: str) -> P | None:
        return self._plugins.get(name)

    def validate(self, name: str, config: Mapping[str, str]) -> None:
        """Check a plugin's config at the API edge; plugins this node lacks are checked where they run."""
        plugin = self._plugins.get(name)
        if plugin is not None:
            plugin.validate(config)

    def configure(self, settings: Settings) -> None:
        """Hand the node's settings to plugins that take some (a `configure` method), before the first run."""
        for plugin in self._plugins.values():
            configure = getattr(plugin, "configure", None)
            if configure is not None:
                configure(settings)

    async def aclose(self) -> None:
        """Let plugins that hold resources (connection pools) release them; one failing does not stop it."""
        for name, plugin in self._plugins.items():
            close = getattr(plugin, "aclose", None)
            if close is None:
                continue
            try:
                await close()
            except Exception:
                logger.exception("plugin %s failed to close", name)


ExecutorRegistry = PluginRegistry[Executor]
ProcessorRegistry = PluginRegistry[Processor]


def discover_executors() -> ExecutorRegistry:
    return PluginRegistry[Executor].discover(EXECUTORS)


def discover_processors() -> ProcessorRegistry:
    return PluginRegistry[Processor].discover(PROCESSORS)
