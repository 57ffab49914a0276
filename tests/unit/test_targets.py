"""Target-node selection: Dkron's tag rules, and a stable `value:N` choice for one launch."""

from __future__ import annotations

from datetime import UTC, datetime

from dkron_nats.leader.targets import select_targets
from dkron_nats.models import JobSpec, Member


def _member(name: str, **tags: str) -> Member:
    return Member(
        name=name,
        addr="127.0.0.1",
        port=1,
        tags=tags,
        server=False,
        version="test",
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


FLEET = [_member(f"web{i}", role="web") for i in range(1, 6)] + [_member("db1", role="db")]


def test_all_matching_nodes_without_a_count() -> None:
    assert select_targets(JobSpec(name="j", tags={"role": "web"}), FLEET, "global") == [
        f"web{i}" for i in range(1, 6)
    ]


def test_no_match_says_which_tags_nobody_has() -> None:
    reason = select_targets(JobSpec(name="j", tags={"role": "cache"}), FLEET, "global")
    assert isinstance(reason, str)
    assert "no alive node in region global has tags role=cache" in reason


def test_a_launch_sent_again_reaches_the_same_nodes() -> None:
    job = JobSpec(name="child", tags={"role": "web:2"})
    first = select_targets(job, FLEET, "global", group=1_700_000_000_000_000_000)
    for _ in range(20):
        # The member list may come back in another order from a new leader's registry.
        again = select_targets(job, list(reversed(FLEET)), "global", group=1_700_000_000_000_000_000)
        assert again == first


def test_different_launches_still_spread_over_the_nodes() -> None:
    job = JobSpec(name="child", tags={"role": "web:1"})
    chosen = {tuple(select_targets(job, FLEET, "global", group=g)) for g in range(200)}
    assert len(chosen) == 5, f"only {chosen} were ever chosen"
