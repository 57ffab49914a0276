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

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from dkron_nats.kv.buckets import RESULTS_STREAM, RUNS_STREAM
from dkron_nats.leader.recent import Recent

FRESH_FOR = 0.05
"""A look this recent answers the next scheduler that asks (they ask every 0.1 s while busy)."""


class RunQueueGauge:
    def __init__(self, js: JetStreamContext, fresh_for: float = FRESH_FOR) -> None:
        self.js = js
        self._runs = Recent(self._run_requests, fresh_for)

    async def waiting(self, results_consumer: str) -> int:
        """Run requests not every agent they reach has taken, plus the results `results_consumer` (a
        partition owner's durable consumer) has not fetched yet."""
        runs = await self._runs.get()
        try:
            results = (await self.js.consumer_info(RESULTS_STREAM, results_consumer)).num_pending or 0
        except NotFoundError:
            results = 0  # not made yet (a partition owner's first instants)
        return runs + results

    async def _run_requests(self) -> int:
        return int((await self.js.stream_info(RUNS_STREAM)).state.messages)
