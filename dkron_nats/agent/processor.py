"""The processor interface: what every processor plugin (built-in or third-party) implements.

A processor post-processes a finished execution on the agent that ran it, before the result is reported:
it may ship the output elsewhere (a file, syslog, Fluent Bit) and replace the stored output with a marker.
The job names its processors and their config in its `processors` field, applied in that order.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from dkron_nats.agent.executor import ExecutionContext
from dkron_nats.models import Execution

_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
"""The values Go's strconv.ParseBool reads as true."""


def forward_of(config: Mapping[str, str]) -> bool:
    """Dkron's `forward`: keep the output in the execution record too (invalid or missing: false)."""
    return config.get("forward", "") in _TRUE


class Processor(Protocol):
    """`validate` is called at the API edge, before a job is stored (on servers that have the plugin)."""

    name: str

    def validate(self, config: Mapping[str, str]) -> None:
        """Raise ConfigError (dkron_nats.agent.executor) with a message naming the bad key."""

    async def process(
        self, execution: Execution, config: Mapping[str, str], ctx: ExecutionContext
    ) -> Execution:
        """The execution to report: a changed copy (`msgspec.structs.replace`) or the same one."""
        ...
