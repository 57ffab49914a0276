"""The executor interface: what every executor plugin (built-in or third-party) implements."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from nats.aio.client import Client

    from dkron_nats.models import JobSpec

OUTPUT_LIMIT = 256_000
"""Dkron's per-execution output cap; the tail is kept."""


class ConfigError(ValueError):
    """The executor_config is invalid; the message is shown to the user as is."""


@dataclass(frozen=True, slots=True)
class ExecutionContext:
    """What an executor knows about the run it performs."""

    job_name: str
    execution_id: str
    node_name: str
    attempt: int = 1
    scheduled_at: datetime | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    job: JobSpec | None = None
    """The whole job, for plugins that need more than their config."""
    nc: Client | None = None
    """The node's own NATS connection (the cluster it is in)."""

    def environment(self) -> dict[str, str]:
        """Variables every job gets, so that scripts can be idempotent per launch."""
        env = {
            "ENV_JOB_NAME": self.job_name,
            "DKRON_JOB_NAME": self.job_name,
            "DKRON_EXECUTION_ID": self.execution_id,
            "DKRON_ATTEMPT": str(self.attempt),
            "DKRON_NODE": self.node_name,
            "DKRON_SCHEDULED_TIME": self.scheduled_at.isoformat() if self.scheduled_at else "",
        }
        env.update(self.env)
        return env


class OutputSink(Protocol):
    """Receives output as it is produced."""

    async def write(self, data: bytes) -> None: ...


class OutputBuffer:
    """Keeps the last `limit` bytes written and remembers whether anything was dropped."""

    def __init__(self, limit: int = OUTPUT_LIMIT) -> None:
        self.limit = limit
        self._buf = bytearray()
        self.truncated = False

    async def write(self, data: bytes) -> None:
        self.append(data)

    def append(self, data: bytes) -> None:
        self._buf += data
        overflow = len(self._buf) - self.limit
        if overflow > 0:
            del self._buf[:overflow]
            self.truncated = True

    def text(self) -> str:
        return bytes(self._buf).decode("utf-8", errors="replace")


@dataclass(frozen=True, slots=True)
class ExecutorResult:
    success: bool
    error: str = ""
    """A short reason for a failure, added to the output."""


class Executor(Protocol):
    """An executor runs one execution. `validate` is called at the API edge, before a job is stored."""

    name: str

    def validate(self, config: Mapping[str, str]) -> None:
        """Raise ConfigError with a message naming the bad key."""

    async def execute(
        self, config: Mapping[str, str], ctx: ExecutionContext, output: OutputSink
    ) -> ExecutorResult: ...
