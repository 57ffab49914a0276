"""Target-node selection (Dkron's target-node spec): all tags must match; `value:N` means N distinct nodes."""

from __future__ import annotations

from collections.abc import Sequence

from dkron_nats.kv.executions import lanes
from dkron_nats.models import JobSpec, Member, has_tags


def select_targets(job: JobSpec, members: Sequence[Member], region: str) -> list[str] | str:
    """Who runs a launch: the names of every matching node, or, for a `value:N` job with more than N
    matching nodes, lanes `_1`..`_N` that the first N of them to claim one take (the launch goes out on the
    job's tag subject, so a node that is busy or slow leaves its lane to another); or the reason no node can
    run the job."""
    wanted, count = job.wanted_tags()
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
        m.name for m in members if m.tags.get("region", region) == region and has_tags(m.tags, wanted)
    )
