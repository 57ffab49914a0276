"""dkron-nats-noop: an executor that succeeds at once (the benchmark's trivial job)."""

from __future__ import annotations

from collections.abc import Mapping

from dkron_nats.agent.executor import ConfigError, ExecutionContext, ExecutorResult, OutputSink

__all__ = ["NoopExecutor"]


class NoopExecutor:
    name = "noop"

    def validate(self, config: Mapping[str, str]) -> None:
        unknown = sorted(set(config) - {"output"})
        if unknown:
            raise ConfigError(f"noop takes only `output`; unknown key {unknown[0]!r}", key=unknown[0])

    async def execute(
        self, config: Mapping[str, str], ctx: ExecutionContext, output: OutputSink
    ) -> ExecutorResult:
        text = config.get("output", "")
        if text:
            await output.write(text.encode())
        return ExecutorResult(success=True)
