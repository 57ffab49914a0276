"""Target-node selection (Dkron's target-node spec): all tags must match; `value:N` means N distinct nodes."""

from __future__ import annotations

import random
from collections.abc import Sequence

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


def select_targets(
    job: JobSpec, members: Sequence[Member], region: str, group: int | None = None
) -> list[str] | str:
    """Names of the chosen nodes, or the reason no node can run the job.

    With `group`, a `value:N` choice is the same every time for that launch while the members are the
    same, so a launch sent again after a leader crash reaches the nodes that may have claimed it already.
    """
    wanted, count = parse_job_tags(job.tags)
    matching = [
        m.name
        for m in members
        if m.tags.get("region", region) == region and all(m.tags.get(k) == v for k, v in wanted.items())
    ]
    if not matching:
        shown = ", ".join(f"{k}={v}" for k, v in sorted(wanted.items())) or "(none)"
        return (
            f"no target nodes found to run job {job.name}: no alive node in region {region} has tags {shown}"
        )
    if count is not None and count < len(matching):
        if count <= 0:
            return f"job {job.name} asks for 0 nodes (tag count 0), so it runs nowhere"
        chooser = random.Random(f"{job.name}:{group}") if group is not None else random
        return sorted(chooser.sample(sorted(matching), count))
    return sorted(matching)
