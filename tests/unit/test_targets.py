"""Target-node selection (Dkron's tag rules, `value:N` as lanes) and the subjects run requests travel on."""

from __future__ import annotations

from datetime import UTC, datetime

from dkron_nats.leader.targets import select_targets
from dkron_nats.models import JobSpec, Member
from dkron_nats.subjects import agent_run_filters, tags_subject


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


def test_a_count_below_the_matching_nodes_gives_that_many_lanes_for_any_of_them_to_take() -> None:
    job = JobSpec(name="child", tags={"role": "web:2"})
    assert select_targets(job, FLEET, "global") == ["_1", "_2"]
    # The same for any member order (a new leader's registry may list them differently).
    assert select_targets(job, list(reversed(FLEET)), "global") == ["_1", "_2"]


def test_a_count_of_at_least_the_matching_nodes_is_every_one_of_them() -> None:
    job = JobSpec(name="child", tags={"role": "web:5"})
    assert select_targets(job, FLEET, "global") == [f"web{i}" for i in range(1, 6)]


def test_tag_subjects_are_canonical_and_an_agent_takes_every_subset_of_its_tags() -> None:
    assert tags_subject("global", {}) == "dkron.run.tags.global"
    assert tags_subject("eu", {"role": "web", "dc": "dc1"}) == "dkron.run.tags.eu.dc.dc1.role.web"
    assert tags_subject("eu", {"region": "eu", "role": "web"}) == "dkron.run.tags.eu.role.web"
    filters = agent_run_filters("web1", "eu", {"role": "web", "dc": "dc1", "version": "0.2.0.dev0"})
    # `version` cannot be a job's tag (not a token), so it is in no subject.
    assert sorted(filters) == sorted(
        [
            "dkron.run.node.web1",
            "dkron.run.tags.eu",
            "dkron.run.tags.eu.dc.dc1",
            "dkron.run.tags.eu.role.web",
            "dkron.run.tags.eu.dc.dc1.role.web",
        ]
    )
    # Every job this node matches is published on one of its filters.
    for tags in ({}, {"dc": "dc1"}, {"role": "web"}, {"role": "web", "dc": "dc1"}):
        assert tags_subject("eu", tags) in filters


def test_an_agent_with_very_many_tags_takes_every_tag_subject_of_its_region() -> None:
    tags = {f"t{i}": "x" for i in range(9)}
    assert agent_run_filters("n1", "global", tags) == ["dkron.run.node.n1", "dkron.run.tags.global.>"]
