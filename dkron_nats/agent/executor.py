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
    """The executor_config is invalid; the message is shown to the user as is. `key`, when given, is the
    config key at fault (the API names it, so a form can show the message beside that field)."""

    def __init__(self, message: str, *, key: str = "") -> None:
        super().__init__(message)
        self.key = key


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
    env_passthrough: tuple[str, ...] = ()
    """Names of the agent's environment that jobs also get (`--job-env-passthrough`; see jobenv.py)."""

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
    """Keeps the last `limit` bytes written and counts what was dropped before them."""

    def __init__(self, limit: int = OUTPUT_LIMIT) -> None:
        self.limit = limit
        self._buf = bytearray()
        self.dropped = 0

    @property
    def truncated(self) -> bool:
        return self.dropped > 0

    async def write(self, data: bytes) -> None:
        self.append(data)

    def append(self, data: bytes) -> None:
        if len(data) >= self.limit:  # a huge chunk: never copy more than the tail into the buffer
            self.dropped += len(self._buf) + len(data) - self.limit
            self._buf = bytearray(data[-self.limit :])
            return
        self._buf += data
        overflow = len(self._buf) - self.limit
        if overflow > 0:
            del self._buf[:overflow]
            self.dropped += overflow

    def text(self) -> str:
        """The output; when some was dropped, a first line says so and the tail fills the rest of `limit`."""
        if not self.truncated:
            return self._buf.decode("utf-8", errors="replace")
        room = self.limit
        while True:  # the notice takes room from the tail, which changes the numbers it states
            notice = _truncation_notice(self.dropped + len(self._buf) - room, room)
            if len(notice) + room <= self.limit:
                break
            room = self.limit - len(notice)
        return notice + self._buf[len(self._buf) - room :].decode("utf-8", errors="replace")


def _truncation_notice(dropped: int, kept: int) -> str:
    return f"[output truncated: the first {dropped:,} bytes were dropped; the last {kept:,} bytes follow]\n"


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
