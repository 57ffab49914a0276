"""The UI on a cluster (3 servers, 2 agents) through a follower: it keeps working when the leader dies."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.harness import Node, wait_for
from tests.integration.test_cluster import _lists_members, leaders, three_servers_two_agents
from tests.ui.conftest import Console, Shot
from tests.ui.pages import (
    button,
    edit_json,
    execution_rows,
    fill_job,
    go,
    heading,
    job_row,
    open_ui,
    show_output,
)

pytestmark = pytest.mark.timeout(300)

LEASE_TTL = "6"
NAME = "ui-cluster-echo"
COMMAND = "echo cluster-run-$(date +%s%N)"
OUTPUT = re.compile(r"cluster-run-\d+")
MEMBERS = ("s1", "s2", "s3", "web1", "web2")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Node]]:
    base = tmp_path_factory.mktemp("ui-cluster")
    with three_servers_two_agents(base, server_args=("--lease-ttl", LEASE_TTL)) as nodes:
        yield nodes


def _servers(cluster: dict[str, Node]) -> list[Node]:
    return [cluster[name] for name in ("s1", "s2", "s3")]


def _leader(servers: list[Node]) -> Node:
    names = wait_for(lambda: leaders(servers) or None, timeout=40, what="a leader")
    assert len(names) == 1, f"more than one leader: {names}"
    return next(s for s in servers if s.name == names[0])


def _run_and_read(page: Page, not_this: str | None = None) -> str:
    """Click "Run now" on the job page; wait for the new execution to succeed, open its output; its id."""
    button(page, "Run now").click()
    rows = execution_rows(page)
    fresh = (
        rows
        if not_this is None
        else page.locator(f'[data-testid="execution-row"]:not([data-execution="{not_this}"])')
    )
    run = fresh.first
    expect(run).to_have_attribute("data-status", "success", timeout=30_000)
    execution = run.get_attribute("data-execution")
    assert execution, "an execution row without data-execution"
    show_output(run)
    expect(page.get_by_test_id("output")).to_contain_text(OUTPUT)
    return execution


def test_the_ui_through_a_follower_survives_the_leader_being_killed(
    cluster: dict[str, Node], page: Page, console: Console, shot: Shot
) -> None:
    servers = _servers(cluster)
    leader = _leader(servers)
    via = next(s for s in servers if s is not leader)
    open_ui(page, via, "#/members")
    for member in MEMBERS:
        expect(page.locator(f'[data-testid="member-row"][data-member="{member}"]')).to_be_visible()
    shot("members-cluster")

    go(page, "#/jobs/new")
    fill_job(page, NAME, "@manually", COMMAND, via_shell=True)
    edit_json(page, lambda body: body.update(tags={"role": "web:1"}))  # one agent runs each launch
    button(page, "Save").click()
    expect(heading(page, NAME)).to_be_visible()
    assert via.get(f"/v1/jobs/{NAME}").json()["tags"] == {"role": "web:1"}
    first = _run_and_read(page)
    page.evaluate("window.__not_reloaded = true")

    leader.kill()  # SIGKILL: its embedded NATS node dies with it
    try:
        # While the lease runs out and JetStream re-elects, calls may answer 5xx: expected here.
        console.allow(r"status of 5\d\d")
        others = [s for s in servers if s is not leader]
        successor = _leader(others)
        assert successor is not leader
        page.get_by_role("navigation").get_by_role("link", name="Jobs", exact=True).click()
        row = job_row(page, NAME)
        expect(row).to_be_visible(timeout=30_000)
        row.get_by_role("link", name=NAME, exact=True).click()
        expect(heading(page, NAME)).to_be_visible()
        expect(page.locator(f'[data-testid="execution-row"][data-execution="{first}"]')).to_be_visible()
        second = _run_and_read(page, not_this=first)
        assert second != first
        assert page.evaluate("window.__not_reloaded === true"), "the page reloaded"
        shot("job-page-after-failover")
    finally:
        leader.start()
    wait_for(_lists_members(via, len(MEMBERS)), timeout=60, what="the killed server to rejoin")
