"""How many launches are under way, read once for all of a server's partitions.

Each partition's scheduler holds its decisions back while MAX_WAITING_RUNS launches are under way (run
requests no agent has taken, and results its owner has not fetched), and looks ten times a second while it
is busy. Asked per partition, that was two JetStream API requests per look: 320 a second on a server owning
16 busy partitions, about a tenth of a core. One gauge per server answers every partition's scheduler from
one look (the run stream's size and every results consumer's backlog) at most every FRESH_FOR seconds.
"""

from __future__ import annotations

from nats.js import JetStreamContext

from dkron_nats.kv.buckets import RESULTS_STREAM, RUNS_STREAM
from dkron_nats.leader.recent import Recent

FRESH_FOR = 0.05
"""A look this recent answers the next scheduler that asks (they ask every 0.1 s while busy)."""


class RunQueueGauge:
    def __init__(self, js: JetStreamContext, fresh_for: float = FRESH_FOR) -> None:
        self.js = js
        self._backlogs = Recent(self._look, fresh_for)

    async def waiting(self, results_consumer: str) -> int:
        """Run requests not every agent they reach has taken, plus the results `results_consumer` (a
        partition owner's durable consumer) has not fetched yet."""
        runs, results = await self._backlogs.get()
        return runs + results.get(results_consumer, 0)

    async def _look(self) -> tuple[int, dict[str, int]]:
        runs = int((await self.js.stream_info(RUNS_STREAM)).state.messages)
        consumers = await self.js.consumers_info(RESULTS_STREAM)
        return runs, {str(c.name): c.num_pending or 0 for c in consumers}
