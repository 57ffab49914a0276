"""10,000 jobs: the Jobs list pages, searches, filters and sorts on the server, each in under a second."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.harness import Node, job, running, wait_for
from tests.ui.conftest import Shot
from tests.ui.pages import button, digits, number_pattern, open_ui, page_info, wait_table

pytestmark = pytest.mark.timeout(300)

JOBS = 10_000
CHUNK = 2_000
"""Jobs per restore upload: 2,000 jobs are about 300 KB, well under the default --max-body-size of 1 MiB."""
FAILING = (7, 4242, 9001)
LIMIT = 1.0
"""Seconds from a user's action to the table showing the expected rows."""


def _name(i: int) -> str:
    return f"scale-{i:05d}"


def _jobs() -> list[dict[str, Any]]:
    """Tags also choose the nodes a job runs on: the few jobs that run (and fail) have none."""
    return [
        job(_name(i), command="false", metadata={"batch": f"b{i % 4}"})
        if i in FAILING
        else job(_name(i), tags={"team": f"t{i % 10}"}, metadata={"batch": f"b{i % 4}"})
        for i in range(JOBS)
    ]


@dataclass
class Seeded:
    node: Node
    seconds: float
    figures: dict[str, float] = field(default_factory=dict)


def _failed(node: Node, name: str) -> bool:
    return bool(node.get(f"/v1/jobs/{name}").json()["status"] == "failed")


def _seed(node: Node) -> float:
    jobs = _jobs()
    start = time.monotonic()
    for first in range(0, JOBS, CHUNK):
        payload = json.dumps(jobs[first : first + CHUNK]).encode()
        upload = {"file": ("jobs.json", payload, "application/json")}
        answer = httpx.post(f"{node.url}/v1/restore", files=upload, timeout=120)
        assert answer.status_code == 200, f"restore: {answer.status_code} {answer.text[:500]}"
        failed = [line for line in json.loads(answer.json()) if not line.startswith("success")]
        assert not failed, f"restore refused jobs: {failed[:5]}"
    seconds = time.monotonic() - start
    total = node.get("/v1/jobs", params={"_start": "0", "_end": "1"}).headers["X-Total-Count"]
    assert total == str(JOBS), f"{total} jobs stored after the restore, expected {JOBS}"
    for i in FAILING:
        assert node.post(f"/v1/jobs/{_name(i)}/run").status_code == 200
    for i in FAILING:
        wait_for(partial(_failed, node, _name(i)), 20, f"{_name(i)} to fail")
    return seconds


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory, screenshot_dir: Path) -> Iterator[Seeded]:
    with running(Node(tmp_path_factory.mktemp("ui-scale"), name="ui-scale")) as node:
        state = Seeded(node, _seed(node))
        state.figures["seed_10000_jobs_s"] = state.seconds
        try:
            yield state
        finally:
            report = {key: round(value, 3) for key, value in state.figures.items()}
            (screenshot_dir / "scale-figures.json").write_text(json.dumps(report, indent=2) + "\n")
            print(f"\nUI scale figures (seconds): {json.dumps(report)}")  # noqa: T201


def _timed(figures: dict[str, float], what: str, action: Callable[[], object], **expected: Any) -> float:
    start = time.monotonic()
    action()
    took = wait_table(**expected) - start
    figures[what] = took
    return took


def test_the_list_of_10000_jobs_filters_sorts_and_pages_in_under_a_second(
    seeded: Seeded, page: Page, shot: Shot
) -> None:
    node, figures = seeded.node, seeded.figures
    first_page = [_name(i) for i in range(25)]
    everything = page_info(1, 25, JOBS)

    def table(**expected: Any) -> dict[str, Any]:
        return {"page": page, **expected}

    _timed(
        figures,
        "open_list_s",
        lambda: open_ui(page, node, "#/jobs"),
        **table(names=first_page, info=everything),
    )
    shot("jobs-list-10000")

    headers = page.get_by_role("columnheader")
    for sortable in ("Name", "Status", "Last success", "Last error", "Next run"):
        sort_button = headers.get_by_role("button", name=sortable, exact=True)
        expect(sort_button, f"a button to sort by {sortable}").to_be_visible()
    per_page = page.get_by_label("Per page", exact=True)
    assert [o.strip() for o in per_page.locator("option").all_inner_texts()] == ["25", "50", "100"]

    search = page.get_by_label("Search", exact=True)
    status = page.get_by_label("Status", exact=True)
    tag = page.get_by_label("Tag", exact=True)
    metadata = page.get_by_label("Metadata", exact=True)
    steps: list[tuple[str, Callable[[], object], dict[str, Any]]] = [
        (
            "search_s",
            lambda: search.fill("scale-0999"),
            table(pattern=r"^scale-0999\d$", count=10, info=page_info(1, 10, 10)),
        ),
        ("clear_search_s", lambda: search.fill(""), table(count=25, info=everything)),
        (
            "status_failed_s",
            lambda: status.select_option(label="failed"),
            table(pattern=r"^scale-(00007|04242|09001)$", count=3, info=page_info(1, 3, 3)),
        ),
        ("status_all_s", lambda: status.select_option(label="All"), table(count=25, info=everything)),
        (
            "tag_filter_s",
            lambda: tag.fill("team=t3"),
            table(pattern=r"^scale-\d{4}3$", count=25, info=page_info(1, 25, JOBS // 10)),
        ),
        ("clear_tag_s", lambda: tag.fill(""), table(count=25, info=everything)),
        (
            "metadata_filter_s",
            lambda: metadata.fill("batch=b1"),
            table(count=25, info=page_info(1, 25, JOBS // 4)),
        ),
        ("clear_metadata_s", lambda: metadata.fill(""), table(names=first_page, info=everything)),
    ]
    for what, action, expected in steps:
        _timed(figures, what, action, **expected)

    # Sorting by name: one click on the header may sort ascending first (the list starts by name
    # ascending), so a second click is allowed; the time counted is the click that made it descending.
    descending = [_name(JOBS - 1 - i) for i in range(25)]
    name_header = page.get_by_role("columnheader").get_by_role("button", name="Name", exact=True)
    if not name_header.count():
        name_header = button(page, "Name")
    once = table(names=descending, info=everything, timeout=2.0)
    try:
        _timed(figures, "sort_name_desc_s", name_header.click, **once)
        figures["clicks_to_sort_by_name_desc"] = 1
    except AssertionError:
        _timed(figures, "sort_name_desc_s", name_header.click, **table(names=descending, info=everything))
        figures["clicks_to_sort_by_name_desc"] = 2

    next_rows = [_name(JOBS - 26 - i) for i in range(25)]
    _timed(
        figures,
        "next_page_s",
        button(page, "Next page").click,
        **table(names=next_rows, info=page_info(26, 50, JOBS)),
    )
    _timed(
        figures,
        "previous_page_s",
        button(page, "Previous page").click,
        **table(names=descending, info=everything),
    )
    _timed(
        figures,
        "per_page_100_s",
        lambda: per_page.select_option(label="100"),
        **table(names=[_name(JOBS - 1 - i) for i in range(100)]),
    )

    # The seeding and the first load (which also boots the app) are reported, not held to the limit.
    reported = ("seed_10000_jobs_s", "open_list_s")
    held = {what: took for what, took in figures.items() if what.endswith("_s") and what not in reported}
    slow = {what: round(took, 3) for what, took in held.items() if took >= LIMIT}
    assert not slow, f"updates of the list slower than {LIMIT}s: {slow} (all: {figures})"


def test_the_dashboard_counts_10000_jobs(seeded: Seeded, page: Page) -> None:
    open_ui(page, seeded.node, "#/")
    expected = {
        "count-total": JOBS,
        "count-failed": len(FAILING),
        "count-untriggered": JOBS - len(FAILING),
        "count-success": 0,
        "count-running": 0,
    }
    for testid, number in expected.items():
        shown = page.get_by_test_id(testid)
        expect(shown, testid).to_have_text(number_pattern(number))
        assert digits(shown.inner_text()) == str(number), testid
