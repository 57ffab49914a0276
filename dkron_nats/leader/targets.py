"""Target-node selection (Dkron's target-node spec): all tags must match; `value:N` means N distinct nodes."""

from __future__ import annotations

from collections.abc import Sequence

from dkron_nats.kv.executions import lanes
from dkron_nats.models import JobSpec, Member


def parse_job_tags(tags: dict[str, str] | None) -> tuple[dict[str, str], int | None]:
    """Split `{"role": "web:2"}` into the values to match and the lowest count (None = every match)."""
    wanted: dict[str, str] = {}
    count: int | None = None
    for key, raw in (tags or {}).items():
        value, sep, n = raw.partition(":")
        wanted[key] = value
        if sep:
            count = int(n) if count is None else min(count, int(n))
    return wanted, count


def select_targets(job: JobSpec, members: Sequence[Member], region: str) -> list[str] | str:
    """Who runs a launch: the names of every matching node, or, for a `value:N` job with more than N
    matching nodes, lanes `_1`..`_N` that the first N of them to claim one take (the launch goes out on the
    job's tag subject, so a node that is busy or slow leaves its lane to another); or the reason no node can
    run the job."""
    wanted, count = parse_job_tags(job.tags)
    matching = matching_nodes(wanted, members, region)
    if not matching:
        shown = ", ".join(f"{k}={v}" for k, v in sorted(wanted.items())) or "(none)"
        return (
            f"no target nodes found to run job {job.name}: no alive node in region {region} has tags {shown}"
        )
    if count is not None and count < len(matching):
        if count <= 0:
            return f"job {job.name} asks for 0 nodes (tag count 0), so it runs nowhere"
        return lanes(count)
    return matching


def matching_nodes(wanted: dict[str, str], members: Sequence[Member], region: str) -> list[str]:
    """The names of the members of `region` that have every tag in `wanted`, sorted."""
    return sorted(
        m.name
        for m in members
        if m.tags.get("region", region) == region and all(m.tags.get(k) == v for k, v in wanted.items())
    )
