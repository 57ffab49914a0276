"""Keeps the newest N execution records per job and purges the rest (history lives in JetStream)."""

from __future__ import annotations

from collections import OrderedDict

from dkron_nats.kv.executions import ExecutionStore, _id_order


class Retention:
    def __init__(self, executions: ExecutionStore, keep: int, cached_jobs: int = 10_000) -> None:
        self.executions = executions
        self.keep = keep
        self.cached_jobs = cached_jobs
        self._ids: OrderedDict[str, list[str]] = OrderedDict()

    async def added(self, job_name: str, exec_id: str) -> None:
        ids = self._ids.get(job_name)
        if ids is None:
            ids = await self.executions.list_ids(job_name)
            self._ids[job_name] = ids
            if len(self._ids) > self.cached_jobs:
                self._ids.popitem(last=False)
        else:
            self._ids.move_to_end(job_name)
        if exec_id not in ids:
            ids.append(exec_id)
            if len(ids) > 1 and _id_order(ids[-2]) > _id_order(exec_id):
                ids.sort(key=_id_order)
        while len(ids) > self.keep:
            await self.executions.purge(job_name, ids.pop(0))

    def forget(self, job_name: str) -> None:
        self._ids.pop(job_name, None)
