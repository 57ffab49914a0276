"""Helpers that drive the UI the way a user does, by the contract's roles, labels and data-testids."""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable
from typing import Any

import httpx
from playwright.sync_api import Locator, Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from tests.harness import Node, wait_for

NEVER = "0001-01-01T00:00:00Z"
EN_DASH = "\u2013"
"""Page info reads like `1\u201325 of 10000`."""


def open_ui(page: Page, node: Node, route: str = "#/") -> Page:
    page.goto(f"{node.url}/ui/{route}")
    return page


def go(page: Page, route: str) -> None:
    """Change the route inside the running app (same document: no reload)."""
    page.evaluate("route => { window.location.hash = route }", route)


def field(page: Page, label: str) -> Locator:
    return page.get_by_label(label, exact=True)


def set_field(page: Page, label: str, value: str | bool) -> None:
    """Fill an input, pick a select's option or tick a checkbox, whichever the field labelled `label` is."""
    target = field(page, label)
    expect(target, f"a form field labelled {label!r}").to_be_visible()
    tag, kind = target.evaluate("e => [e.tagName, (e.type || '').toLowerCase()]")
    if tag == "SELECT":
        target.select_option(str(value))
    elif kind == "checkbox":
        target.set_checked(value in (True, "true"))
    else:
        target.fill(("true" if value else "false") if isinstance(value, bool) else value)


def fill_job(page: Page, name: str, schedule: str, command: str, via_shell: bool = False) -> None:
    """The create form with a shell job (the form must be open)."""
    set_field(page, "name", name)
    set_field(page, "schedule", schedule)
    set_field(page, "executor", "shell")
    set_field(page, "executor_config.command", command)
    if via_shell:
        set_field(page, "executor_config.shell", True)


def json_view(page: Page) -> Locator:
    """The textarea of the whole job as JSON, after switching to it with the "JSON" tab or button."""
    switch = page.get_by_role("tab", name="JSON", exact=True).or_(button(page, "JSON"))
    switch.first.click()
    area = page.get_by_label("Job JSON", exact=True)
    expect(area).to_be_visible()
    return area


def form_view(page: Page) -> None:
    """Back from the JSON view to the fields: a "Form" tab or button if there is one, else "JSON" again."""
    back = page.get_by_role("tab", name="Form", exact=True).or_(button(page, "Form"))
    if back.count():
        back.first.click()
    else:
        page.get_by_role("tab", name="JSON", exact=True).or_(button(page, "JSON")).first.click()
    expect(page.get_by_label("Job JSON", exact=True)).to_have_count(0)


def edit_json(page: Page, change: Callable[[dict[str, Any]], None]) -> None:
    """Switch to the JSON view, apply `change` to the job shown there, and put it back in the textarea."""
    area = json_view(page)
    body: dict[str, Any] = json.loads(area.input_value())
    change(body)
    area.fill(json.dumps(body, indent=2))


def button(page: Page | Locator, name: str) -> Locator:
    return page.get_by_role("button", name=name, exact=True)


def heading(page: Page, name: str) -> Locator:
    return page.get_by_role("heading", level=1, name=name, exact=True)


def job_row(page: Page, name: str) -> Locator:
    return page.locator(f'[data-testid="job-row"][data-job="{name}"]')


def job_rows(page: Page) -> Locator:
    return page.get_by_test_id("job-row")


def execution_rows(page: Page) -> Locator:
    return page.get_by_test_id("execution-row")


def execution_row(page: Page, execution: str) -> Locator:
    return page.locator(f'[data-testid="execution-row"][data-execution="{execution}"]')


def toast(page: Page) -> Locator:
    return page.get_by_test_id("toast")


def dialog(page: Page) -> Locator:
    return page.get_by_role("dialog")


def number_pattern(number: int) -> re.Pattern[str]:
    """A count shown as text: 10000 may read 10000, 10,000 or 10 000 (with words around it)."""
    grouped = r"[\s,.\u202f\u00a0]?".join(str(number))
    return re.compile(rf"^\D*{grouped}\D*$")


def digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def names_shown(page: Page) -> list[str]:
    return [str(n) for n in job_rows(page).evaluate_all("rows => rows.map(r => r.dataset.job)")]


SHOWS = """([names, pattern, count, info]) => {
    const rows = [...document.querySelectorAll('[data-testid="job-row"]')].map(r => r.dataset.job);
    if (names !== null && JSON.stringify(rows) !== JSON.stringify(names)) return false;
    if (pattern !== null && !rows.every(name => new RegExp(pattern).test(name))) return false;
    if (count !== null && rows.length !== count) return false;
    const shown = document.querySelector('[data-testid="page-info"]');
    return info === null || (shown !== null && shown.textContent.trim() === info);
}"""


def wait_table(
    page: Page,
    names: list[str] | None = None,
    pattern: str | None = None,
    count: int | None = None,
    info: str | None = None,
    timeout: float = 10.0,
) -> float:
    """Wait until the jobs table shows exactly `names` in order, or `count` rows all matching `pattern`,
    and `info` as its page info (each if given); returns time.monotonic() when it did."""
    try:
        page.wait_for_function(
            SHOWS, arg=[names, pattern, count, info], timeout=timeout * 1000, polling="raf"
        )
    except PlaywrightTimeoutError:
        info_shown = page.get_by_test_id("page-info").all_text_contents()
        shown = names_shown(page)
        raise AssertionError(
            f"after {timeout}s the table shows {len(shown)} rows {shown[:30]} with page info {info_shown}; "
            f"expected names={names} pattern={pattern!r} count={count} info={info!r}"
        ) from None
    return time.monotonic()


def page_info(first: int, last: int, total: int) -> str:
    return f"{first}{EN_DASH}{last} of {total}"


def tab_to(page: Page, target: Locator, limit: int = 150) -> None:
    """Press Tab until `target` has the keyboard focus (as a keyboard user would)."""
    for _ in range(limit):
        if target.evaluate("e => e === document.activeElement"):
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"{target} never got the focus after {limit} presses of Tab")


def focus_visible(target: Locator) -> bool:
    """The focused element is drawn differently: an outline or a box shadow."""
    style = target.evaluate(
        "e => { const s = getComputedStyle(e); return [s.outlineStyle, s.outlineWidth, s.boxShadow] }"
    )
    outline_style, outline_width, shadow = style
    return (outline_style != "none" and outline_width not in ("0px", "")) or shadow not in ("none", "")


# ------------------------------------------------------------------------------------------- the API


def api_job(node: Node, name: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    response = node.get(f"/v1/jobs/{name}", headers=headers or {})
    assert response.status_code == 200, f"GET /v1/jobs/{name}: {response.status_code} {response.text}"
    found: dict[str, Any] = response.json()
    return found


def create(node: Node, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
    response = node.post("/v1/jobs", json=body, headers=headers or {})
    assert response.status_code == 201, f"creating {body['name']}: {response.status_code} {response.text}"


def running_execution(node: Node, name: str, timeout: float = 20.0) -> dict[str, Any]:
    def running() -> dict[str, Any] | None:
        response = node.get(f"/v1/jobs/{name}/executions")
        found = [e for e in response.json() if e["status"] == "running"] if response.is_success else []
        return found[0] if found else None

    return wait_for(running, timeout, f"an execution of {name} to run")


def finished_execution(node: Node, name: str, execution: str, timeout: float = 20.0) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        response = node.get(f"/v1/jobs/{name}/executions/{execution}")
        if not response.is_success:
            return None
        record: dict[str, Any] = response.json()
        return record if record["finished_at"] != NEVER else None

    return wait_for(done, timeout, f"execution {execution} of {name} to finish")


def eventually(check: Callable[[], bool], timeout: float, what: str) -> None:
    wait_for(lambda: check() or None, timeout, what)


def delete_quietly(node: Node, *names: str) -> None:
    for name in names:
        with contextlib.suppress(httpx.HTTPError):
            node.request("DELETE", f"/v1/jobs/{name}")


def show_output(row: Locator) -> None:
    """Open an execution's output: its "Output" button if it has one, else a click on the row."""
    output_button = row.get_by_role("button", name="Output", exact=True)
    if output_button.count():
        output_button.click()
    else:
        row.click()


FIRE_COUNT = """e => {
    const items = e.querySelectorAll('li, tr, [data-fire]');
    if (items.length) return [...items].filter(i => /\\d/.test(i.textContent)).length;
    return (e.textContent.match(/\\b20\\d\\d\\b/g) || []).length;
}"""


def fires_in(preview: Locator) -> int:
    """How many fire times a preview lists: its list items or table rows holding digits, else the dates."""
    count: int = preview.evaluate(FIRE_COUNT)
    return count
