"""What an execution costs, as `/metrics` shows it: NATS messages through the node's connection and the
process's CPU time, next to the execution counters (messages per execution = their deltas' ratio)."""

from __future__ import annotations

from tests.harness import Node, finished, job, wait_for

RUNS = 5


def _series(text: str) -> dict[str, float]:
    """`name{labels}` -> value of every sample in a Prometheus text exposition."""
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            found[series] = float(value)
    return found


def _scrape(node: Node) -> dict[str, float]:
    response = node.get("/metrics")
    response.raise_for_status()
    return _series(response.text)


def test_nats_messages_and_cpu_move_with_the_executions_counted(server: Node) -> None:
    name = "nats-cost"
    server.post("/v1/jobs", json=job(name)).raise_for_status()
    before = _scrape(server)
    for run in range(1, RUNS + 1):
        assert server.post(f"/v1/jobs/{name}/run").status_code in (200, 202)
        wait_for(lambda: finished(server, name, run), timeout=20, what=f"run {run}")  # noqa: B023
    counted = f'dkron_job_executions_succeeded_total{{job_name="{name}"}}'

    def counted_all() -> dict[str, float] | None:
        scraped = _scrape(server)
        return scraped if scraped.get(counted, 0) >= RUNS else None

    after = wait_for(counted_all, timeout=10, what="the runs counted")
    server.request("DELETE", f"/v1/jobs/{name}")

    executions = after[counted] - before.get(counted, 0)
    assert executions == RUNS
    for direction in ("in", "out"):
        series = f'dkron_nats_messages_total{{direction="{direction}"}}'
        assert series in after, f"/metrics has no {series}"
        moved = after[series] - before[series]
        # Every execution sends and receives several messages on the node's connection (claim, result,
        # record and their acks): at least one each way per execution, whatever else the node did.
        assert moved >= executions, f"{series} moved by {moved} over {executions} executions"
        payload = f'dkron_nats_bytes_total{{direction="{direction}"}}'
        assert after[payload] > before[payload], f"{payload} did not move"
    assert after["process_cpu_seconds_total"] > before["process_cpu_seconds_total"] > 0
