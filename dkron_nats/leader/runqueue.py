"""How many launches are under way, read for all of a server's partitions at once.

Each partition's scheduler holds its decisions back while MAX_WAITING_RUNS launches are under way (run
requests no agent has taken, and results its owner has not fetched), and looks ten times a second while it
is busy. Asked per partition, that was two JetStream API requests per look: 320 a second on a server owning
16 busy partitions, about a tenth of a core. The run stream's size is the same for every partition, so one
look at it answers them all, and one listing of the results stream's consumers gives every partition's
results backlog: two requests per look for all partitions. The listing is answered by the meta leader,
which right after a server's death is often being elected again: a scheduler's first look is bounded
(scheduler.FIRST_LOOK), and the later ones run beside its decisions, which go on meanwhile on the last answer.
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


class _Consumer(msgspec.Struct):
    name: str = ""
    num_pending: int = 0


class _Info(msgspec.Struct):
    """The part of a stream's info or of a consumer listing read here. Decoded from the raw answer: nats-py's
    `stream_info` and `consumer_info` build their whole dataclasses, a millisecond each, which at ten
    looks a second showed as 4% of a busy node's CPU."""

    state: _StreamState | None = None
    consumers: list[_Consumer] | None = None
    total: int = 0
    error: ApiError | None = None


_decode_info = msgspec.json.Decoder(_Info).decode


class RunQueueGauge:
    def __init__(self, nc: Client, fresh_for: float = FRESH_FOR) -> None:
        self.nc = nc
        self._runs = Recent(self._run_requests, fresh_for)
        self._results = Recent(self._results_pending, fresh_for)

    async def waiting(self, results_consumer: str) -> int:
        """Run requests not every agent they reach has taken, plus the results `results_consumer` (a
        partition owner's durable consumer) has not fetched yet (none: not made yet)."""
        runs = await self._runs.get()
        return runs + (await self._results.get()).get(results_consumer, 0)

    async def results_waiting(self, subject: str) -> bool:
        """Whether DKRON_RESULTS still holds a result published on `subject` (a work queue: a result leaves
        it once its partition's owner has applied it)."""
        try:
            await self._info(
                f"STREAM.MSG.GET.{RESULTS_STREAM}", msgspec.json.encode({"last_by_subj": subject})
            )
        except NotFoundError:
            return False
        return True

    async def _run_requests(self) -> int:
        state = (await self._info(f"STREAM.INFO.{RUNS_STREAM}")).state
        return state.messages if state is not None else 0

    async def _results_pending(self) -> dict[str, int]:
        """Every results consumer's backlog, page by page (a page holds 256: one page for any cluster)."""
        pending: dict[str, int] = {}
        while True:
            offset = b'{"offset":%d}' % len(pending)
            page = await self._info(f"CONSUMER.LIST.{RESULTS_STREAM}", offset)
            pending.update((c.name, c.num_pending) for c in page.consumers or [])
            if not page.consumers or len(pending) >= page.total:
                return pending

    async def _info(self, api: str, body: bytes = b"") -> _Info:
        """A JetStream API answer; nats-py's error for a refusal (NotFoundError: no such stream)."""
        answer = await self.nc.request(f"$JS.API.{api}", body, timeout=API_TIMEOUT)
        info = _decode_info(answer.data)
        if info.error is not None:
            raise api_error(info.error)
        return info
