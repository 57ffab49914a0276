"""How many launches are under way, read for all of a server's partitions at once.

Each partition's scheduler holds its decisions back while MAX_WAITING_RUNS launches are under way (run
requests no agent has taken, and results its owner has not fetched), and looks ten times a second while it
is busy. Asked per partition, that was two JetStream API requests per look: 320 a second on a server owning
16 busy partitions, about a tenth of a core. The run stream's size is the same for every partition, so one
look at it answers them all; each partition's results backlog is its own consumer's. Both are answered by
the stream's or the consumer's raft leader: listing the stream's consumers in one request would be cheaper,
but the meta leader answers that, and right after a server's death it is often being elected again (a
takeover then waited a second more for it).
"""

from __future__ import annotations

import msgspec
from nats.aio.client import Client
from nats.js.errors import NotFoundError

from dkron_nats.kv.buckets import RESULTS_STREAM, RUNS_STREAM
from dkron_nats.kv.publisher import ApiError, api_error
from dkron_nats.leader.recent import Recent

FRESH_FOR = 0.05
"""A look this recent answers the next scheduler that asks (they ask every 0.1 s while busy)."""
API_TIMEOUT = 5.0


class _StreamState(msgspec.Struct):
    messages: int = 0


class _Info(msgspec.Struct):
    """The part of a stream's or consumer's info read here. Decoded from the raw answer: nats-py's
    `stream_info` and `consumer_info` build their whole dataclasses, a millisecond each, which at ten
    looks a second showed as 4% of a busy node's CPU."""

    state: _StreamState | None = None
    num_pending: int = 0
    error: ApiError | None = None


_decode_info = msgspec.json.Decoder(_Info).decode


class RunQueueGauge:
    def __init__(self, nc: Client, fresh_for: float = FRESH_FOR) -> None:
        self.nc = nc
        self._runs = Recent(self._run_requests, fresh_for)

    async def waiting(self, results_consumer: str) -> int:
        """Run requests not every agent they reach has taken, plus the results `results_consumer` (a
        partition owner's durable consumer) has not fetched yet."""
        runs = await self._runs.get()
        try:
            results = (await self._info(f"CONSUMER.INFO.{RESULTS_STREAM}.{results_consumer}")).num_pending
        except NotFoundError:
            results = 0  # not made yet (a partition owner's first instants)
        return runs + results

    async def _run_requests(self) -> int:
        state = (await self._info(f"STREAM.INFO.{RUNS_STREAM}")).state
        return state.messages if state is not None else 0

    async def _info(self, api: str) -> _Info:
        """A JetStream API answer; nats-py's error for a refusal (NotFoundError: no such stream, consumer)."""
        answer = await self.nc.request(f"$JS.API.{api}", b"", timeout=API_TIMEOUT)
        info = _decode_info(answer.data)
        if info.error is not None:
            raise api_error(info.error)
        return info
