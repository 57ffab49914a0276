"""The web UI in a real browser against one real server (auth off): every screen, the way a user uses it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.harness import Node, job, running, wait_for
from tests.ui.conftest import PHONE, Console, Contexts, Shot
from tests.ui.pages import (
    EN_DASH,
    api_job,
    button,
    create,
    delete_quietly,
    dialog,
    edit_json,
    eventually,
    execution_row,
    execution_rows,
    field,
    fill_job,
    finished_execution,
    fires_in,
    focus_visible,
    form_view,
    go,
    heading,
    job_row,
    job_rows,
    number_pattern,
    open_ui,
    running_execution,
    set_field,
    show_output,
    tab_to,
    toast,
)

NODE = "ui-node"
TICKER = "for i in $(seq 1 60); do echo line$i; sleep 1; done"
SOME_TEXT = re.compile(r"\S")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    with running(Node(tmp_path_factory.mktemp("ui-browser"), name=NODE)) as started:
        yield started


def _ticker(name: str, **fields: object) -> dict[str, object]:
    return job(name, "@manually", TICKER, executor_config={"command": TICKER, "shell": "true"}, **fields)


def _count(node: Node, **params: str) -> int:
    answer = node.get("/v1/jobs", params={"_start": "0", "_end": "1", **params})
    return int(answer.headers["X-Total-Count"])


def _has_run(node: Node, name: str) -> bool:
    return bool(api_job(node, name)["status"])


def _is_disabled(node: Node, name: str) -> bool:
    return api_job(node, name)["disabled"] is True


def _is_gone(node: Node, name: str) -> bool:
    return node.get(f"/v1/jobs/{name}").status_code == 404


def _nav(page: Page, name: str) -> None:
    page.get_by_role("navigation").get_by_role("link", name=name, exact=True).click()


def test_dashboard_shows_the_leader_counts_chart_members_and_running_jobs(
    node: Node, page: Page, shot: Shot
) -> None:
    create(node, job("ui-dash-ok", command="true"))
    create(node, job("ui-dash-bad", command="false"))
    create(node, _ticker("ui-dash-long"))
    for name in ("ui-dash-ok", "ui-dash-bad"):
        node.post(f"/v1/jobs/{name}/run")
        eventually(partial(_has_run, node, name), 20, f"{name} to run")
    node.post("/v1/jobs/ui-dash-long/run")
    long_run = running_execution(node, "ui-dash-long")
    try:
        open_ui(page, node, "#/")
        nav = page.get_by_role("navigation")
        for link in ("Dashboard", "Jobs", "Busy", "Members", "Settings", "Audit"):
            expect(nav.get_by_role("link", name=link, exact=True)).to_have_count(1)
        expect(page.get_by_test_id("leader")).to_contain_text(NODE)
        chart = page.get_by_test_id("stats-chart")
        expect(chart).to_be_visible()
        assert chart.evaluate("e => e.tagName.toLowerCase() === 'svg' || !!e.querySelector('svg')"), (
            "stats-chart is not an inline SVG"
        )
        expect(page.get_by_test_id("members-summary")).to_contain_text(NODE)
        expect(page.get_by_test_id("running-list")).to_contain_text("ui-dash-long")
        expect(page.get_by_test_id("count-total")).to_have_text(number_pattern(_count(node)))
        shot("dashboard")
        expected = {
            "count-total": _count(node),
            "count-success": _count(node, status="success"),
            "count-failed": _count(node, status="failed"),
            # Jobs running now (Dkron never sets a job's status to "running": count them from /v1/busy).
            "count-running": len({e["job_name"] for e in node.get("/v1/busy").json()}),
            "count-untriggered": _count(node, status="untriggered"),
        }
        assert expected["count-failed"] >= 1
        assert expected["count-running"] >= 1
        for testid, number in expected.items():
            why = f"{testid} should read {number}"
            if testid == "count-running":
                why += " (the jobs with a running execution: a job's status is never 'running', as in Dkron)"
            expect(page.get_by_test_id(testid), why).to_have_text(number_pattern(number))
    finally:
        node.post(f"/v1/jobs/ui-dash-long/executions/{long_run['id']}/cancel")
        finished_execution(node, "ui-dash-long", long_run["id"])
        delete_quietly(node, "ui-dash-ok", "ui-dash-bad", "ui-dash-long")


def test_a_job_made_in_the_form_is_listed_runs_and_shows_its_output(
    node: Node, page: Page, shot: Shot
) -> None:
    name = "ui-form-echo"
    open_ui(page, node, "#/jobs")
    page.get_by_role("link", name="New job", exact=True).click()
    expect(page).to_have_url(re.compile(r"#/jobs/new$"))
    fill_job(page, name, "@manually", "echo hello-from-the-form")
    button(page, "Save").click()
    expect(heading(page, name)).to_be_visible()
    expect(page).to_have_url(re.compile(rf"#/jobs/{name}$"))
    saved = api_job(node, name)
    assert saved["executor"] == "shell"
    assert saved["executor_config"]["command"] == "echo hello-from-the-form"
    assert saved["schedule"] == "@manually"

    _nav(page, "Jobs")
    row = job_row(page, name)
    expect(row).to_be_visible()
    row.get_by_role("link", name=name, exact=True).click()
    expect(heading(page, name)).to_be_visible()
    expect(page.get_by_test_id("job-summary")).to_contain_text("@manually")
    expect(page.get_by_test_id("job-summary")).to_contain_text("shell")

    button(page, "Run now").click()
    expect(toast(page)).to_have_text(SOME_TEXT)
    run = execution_rows(page).first
    expect(run).to_have_attribute("data-status", "success", timeout=20_000)
    expect(run).to_contain_text(NODE)
    show_output(run)
    expect(page.get_by_test_id("output")).to_contain_text("hello-from-the-form")
    expect(page.get_by_test_id("job-status")).to_contain_text("success")
    shot("job-page-output")
    delete_quietly(node, name)


def test_output_arrives_live_and_cancel_ends_the_run_as_failed(
    node: Node, page: Page, console: Console, shot: Shot
) -> None:
    name = "ui-live-ticker"
    create(node, _ticker(name, concurrency="forbid"))
    console.allow(r"status of 409")  # the second "Run now" of a forbid job, asserted below
    open_ui(page, node, f"#/jobs/{name}")
    button(page, "Run now").click()
    running_row = page.locator('[data-testid="execution-row"][data-status="running"]').first
    expect(running_row).to_be_visible(timeout=20_000)
    execution = running_row.get_attribute("data-execution")
    assert execution, "an execution row without data-execution"
    row = execution_row(page, execution)
    show_output(row)
    output = page.get_by_test_id("output")
    expect(output).to_contain_text("line2", timeout=15_000)
    expect(row).to_have_attribute("data-status", "running", timeout=500)
    expect(output).to_contain_text("line4", timeout=15_000)  # still coming, line by line
    expect(row).to_have_attribute("data-status", "running", timeout=500)
    assert "line60" not in output.inner_text()

    button(page, "Run now").click()  # refused: the previous run goes on and the job forbids overlap
    expect(toast(page)).to_contain_text("concurrency is forbid")
    shot("job-page-live-output")
    button(page, "Force run").click()  # runs anyway
    forced = page.locator(
        f'[data-testid="execution-row"][data-status="running"]:not([data-execution="{execution}"])'
    )
    expect(forced).to_have_count(1, timeout=20_000)
    forced_id = forced.get_attribute("data-execution")
    assert node.post(f"/v1/jobs/{name}/executions/{forced_id}/cancel").status_code == 202
    expect(execution_row(page, str(forced_id))).to_have_attribute("data-status", "failed", timeout=20_000)

    button(page, "Cancel execution").first.click()
    expect(row).to_have_attribute("data-status", "failed", timeout=20_000)
    record = finished_execution(node, name, execution)
    assert record["success"] is False
    expect(button(page, "Cancel execution")).to_have_count(0)
    expect(output).to_contain_text("line1")
    delete_quietly(node, name)


def test_the_json_view_edits_the_whole_job_and_the_form_keeps_the_edits(node: Node, page: Page) -> None:
    name = "ui-json-view"
    open_ui(page, node, "#/jobs/new")
    fill_job(page, name, "@every 1h", "echo from-the-form")

    def change(body: dict[str, Any]) -> None:
        assert body["name"] == name, f"the JSON view does not show the form's fields: {body}"
        assert body["executor_config"]["command"] == "echo from-the-form"
        body["displayname"] = "Made in JSON"
        body["metadata"] = {"team": "ui"}

    edit_json(page, change)
    form_view(page)
    expect(field(page, "displayname")).to_have_value("Made in JSON")
    expect(field(page, "schedule")).to_have_value("@every 1h")
    button(page, "Save").click()
    expect(heading(page, name)).to_be_visible()
    saved = api_job(node, name)
    assert saved["displayname"] == "Made in JSON"
    assert saved["metadata"] == {"team": "ui"}
    assert saved["schedule"] == "@every 1h"
    delete_quietly(node, name)


def test_the_form_has_fields_for_each_built_in_executor_and_raw_json_for_plugins(
    node: Node, page: Page
) -> None:
    name = "ui-http-job"
    open_ui(page, node, "#/jobs/new")
    set_field(page, "name", name)
    set_field(page, "schedule", "@manually")
    set_field(page, "executor", "nats")
    for key in ("url", "subject", "message", "userName", "password", "headers", "request", "timeout"):
        expect(field(page, f"executor_config.{key}"), f"nats: executor_config.{key}").to_be_visible()
    set_field(page, "executor", "tcpcheck")  # a plugin: its config is raw JSON
    expect(field(page, "executor_config (JSON)")).to_be_visible()
    set_field(page, "executor", "http")
    for key in ("url", "method", "body", "headers", "timeout", "expectCode"):
        expect(field(page, f"executor_config.{key}"), f"http: executor_config.{key}").to_be_visible()
    expect(field(page, "executor_config.command")).to_have_count(0)
    set_field(page, "executor_config.url", f"{node.url}/health")
    set_field(page, "executor_config.method", "GET")
    set_field(page, "executor_config.expectCode", "200")
    button(page, "Save").click()
    expect(heading(page, name)).to_be_visible()
    config = api_job(node, name)["executor_config"]
    assert config["url"] == f"{node.url}/health", config
    assert config["method"] == "GET", config
    assert config["expectCode"] == "200", config
    delete_quietly(node, name)


def test_disable_and_enable_toggle_the_job_on_the_page_and_in_the_api(node: Node, page: Page) -> None:
    name = "ui-toggle"
    create(node, job(name))
    open_ui(page, node, f"#/jobs/{name}")
    expect(heading(page, name)).to_be_visible()
    button(page, "Disable").click()
    expect(button(page, "Enable")).to_be_visible()
    expect(toast(page)).to_have_text(SOME_TEXT)
    eventually(lambda: api_job(node, name)["disabled"] is True, 5, "the API to say disabled")
    shown = page.get_by_test_id("job-status").or_(page.get_by_test_id("job-summary"))
    expect(shown.filter(has_text=re.compile("disabled", re.IGNORECASE)).first).to_be_visible()

    _nav(page, "Jobs")
    page.get_by_label("Search", exact=True).fill(name)
    page.get_by_label("Enabled", exact=True).select_option(label="Disabled")
    expect(job_row(page, name)).to_be_visible()
    page.get_by_label("Enabled", exact=True).select_option(label="Enabled")
    expect(job_row(page, name)).to_have_count(0)

    go(page, f"#/jobs/{name}")
    button(page, "Enable").click()
    expect(button(page, "Disable")).to_be_visible()
    eventually(lambda: api_job(node, name)["disabled"] is False, 5, "the API to say enabled")
    delete_quietly(node, name)


def test_a_refused_edit_shows_the_error_beside_its_field_and_changes_nothing(
    node: Node, page: Page, console: Console, shot: Shot
) -> None:
    name = "ui-bad-edit"
    create(node, job(name, "@every 1h", "echo kept"))
    console.allow(r"status of 400")  # the refused save and the preview of the bad schedule
    open_ui(page, node, f"#/jobs/{name}/edit")
    expect(field(page, "schedule")).to_have_value("@every 1h")
    set_field(page, "schedule", "every now and then")
    expect(page.get_by_test_id("schedule-preview")).to_contain_text("can't parse job schedule")
    button(page, "Save").click()
    error = page.get_by_test_id("error-schedule")
    expect(error).to_be_visible()
    expect(error).to_have_attribute("role", "alert")
    expect(error).to_contain_text("can't parse job schedule")
    shot("form-error")
    assert api_job(node, name)["schedule"] == "@every 1h"
    expect(page).to_have_url(re.compile(rf"#/jobs/{name}/edit$"))

    # An error about a nested field shows beside that field.
    set_field(page, "schedule", "@every 1h")
    set_field(page, "retry_backoff.initial", "9m")
    set_field(page, "retry_backoff.max", "1m")
    button(page, "Save").click()
    nested = page.get_by_test_id("error-retry_backoff.initial")
    expect(nested).to_be_visible()
    expect(nested).to_have_attribute("role", "alert")
    expect(nested).to_contain_text(re.compile(r"\S"))
    assert api_job(node, name)["retry_backoff"] in (None, {}), "a refused save changed the job"
    delete_quietly(node, name)


def test_delete_asks_in_a_dialog_that_escape_closes_and_confirm_deletes(node: Node, page: Page) -> None:
    name = "ui-delete-me"
    create(node, job(name))
    open_ui(page, node, f"#/jobs/{name}")
    button(page, "Delete").click()
    expect(dialog(page)).to_be_visible()
    expect(dialog(page).locator(":focus"), "the focus moves into the dialog").to_have_count(1)
    page.keyboard.press("Escape")
    expect(dialog(page)).to_have_count(0)
    assert node.get(f"/v1/jobs/{name}").status_code == 200
    button(page, "Delete").click()
    button(dialog(page), "Cancel").click()
    expect(dialog(page)).to_have_count(0)
    assert node.get(f"/v1/jobs/{name}").status_code == 200
    button(page, "Delete").click()
    button(dialog(page), "Confirm").click()
    expect(toast(page)).to_have_text(SOME_TEXT)
    eventually(lambda: node.get(f"/v1/jobs/{name}").status_code == 404, 5, "the job to be deleted")
    _nav(page, "Jobs")
    page.get_by_label("Search", exact=True).fill("ui-delete")
    expect(page.get_by_test_id("page-info")).to_be_visible()
    expect(job_row(page, name)).to_have_count(0)


def test_bulk_actions_run_toggle_and_delete_the_selected_jobs(node: Node, page: Page) -> None:
    names = ["ui-bulk-1", "ui-bulk-2", "ui-bulk-3"]
    for name in names:
        create(node, job(name, command=f"echo {name}"))
    open_ui(page, node, "#/jobs")
    page.get_by_label("Search", exact=True).fill("ui-bulk-")
    expect(job_rows(page)).to_have_count(3)
    select_all = page.get_by_label("Select all on page", exact=True)
    select_all.check()
    for name in names:
        expect(page.get_by_label(f"Select {name}", exact=True)).to_be_checked()
    button(page, "Run selected").click()
    for name in names:
        eventually(partial(_has_run, node, name), 20, f"{name} to run")
    select_all.check()  # kept or cleared after the first action: either way all three are selected
    button(page, "Toggle selected").click()
    for name in names:
        eventually(partial(_is_disabled, node, name), 5, f"{name} disabled")
    select_all.check()
    page.get_by_label("Select ui-bulk-3", exact=True).uncheck()
    button(page, "Delete selected").click()
    button(dialog(page), "Confirm").click()
    expect(job_rows(page)).to_have_count(1)
    expect(job_row(page, "ui-bulk-3")).to_be_visible()
    for name in names[:2]:
        eventually(partial(_is_gone, node, name), 5, f"{name} deleted")
    delete_quietly(node, "ui-bulk-3")


def test_the_schedule_preview_shows_the_next_five_fires_with_their_offset(
    node: Node, page: Page, shot: Shot
) -> None:
    open_ui(page, node, "#/jobs/new")
    set_field(page, "timezone", "Europe/Paris")
    set_field(page, "schedule", "@every 1h")
    preview = page.get_by_test_id("schedule-preview")
    expect(preview).to_contain_text(re.compile(r"\+0[12]:00"))
    wait_for(lambda: fires_in(preview) == 5, 10, f"5 fires in the preview (text: {preview.inner_text()!r})")
    shot("schedule-preview")


def test_the_dependency_graph_shows_parents_and_children(node: Node, page: Page) -> None:
    parent, child, fan_in = "ui-dep-parent", "ui-dep-child", "ui-dep-fan-in"
    create(node, job(parent))
    create(node, job(child, parent_job=parent))
    create(node, job(fan_in, depends_on=[{"job": parent, "on": "success"}]))
    open_ui(page, node, f"#/jobs/{parent}")
    graph = page.get_by_test_id("dependency-graph")
    expect(graph).to_contain_text(child)
    expect(graph).to_contain_text(fan_in)
    go(page, f"#/jobs/{fan_in}")
    expect(heading(page, fan_in)).to_be_visible()
    expect(graph).to_contain_text(parent)
    go(page, f"#/jobs/{child}")
    expect(heading(page, child)).to_be_visible()
    expect(graph).to_contain_text(parent)
    delete_quietly(node, fan_in, child, parent)


def test_the_job_page_lists_the_next_ten_fires_with_utc_offsets(node: Node, page: Page) -> None:
    name = "ui-next-fires"
    create(node, job(name, "0 30 9 * * *", timezone="America/New_York"))
    open_ui(page, node, f"#/jobs/{name}")
    fires = page.get_by_test_id("next-fires")
    expect(fires).to_contain_text(re.compile(r"-0[45]:00"))
    wait_for(lambda: fires_in(fires) == 10, 10, f"10 fires listed (text: {fires.inner_text()!r})")
    delete_quietly(node, name)


def test_settings_pause_and_resume_scheduling_and_submissions(node: Node, page: Page, shot: Shot) -> None:
    def paused() -> dict[str, bool]:
        state: dict[str, bool] = node.get("/v1/pause").json()
        return state

    try:
        open_ui(page, node, "#/settings")
        state = page.get_by_test_id("pause-state")
        expect(state).to_contain_text(re.compile("scheduling", re.IGNORECASE))  # loaded
        running_text = state.inner_text()
        button(page, "Pause scheduling").click()
        expect(button(page, "Resume scheduling")).to_be_visible()
        eventually(lambda: paused()["scheduling_paused"] is True, 5, "scheduling paused in the API")
        expect(state).not_to_have_text(running_text)
        expect(state).to_contain_text(re.compile("paused", re.IGNORECASE))
        shot("settings")
        button(page, "Resume scheduling").click()
        expect(button(page, "Pause scheduling")).to_be_visible()
        eventually(lambda: paused()["scheduling_paused"] is False, 5, "scheduling resumed in the API")
        expect(state).to_have_text(running_text)

        button(page, "Pause submissions").click()
        expect(button(page, "Resume submissions")).to_be_visible()
        eventually(lambda: paused()["paused"] is True, 5, "submissions paused in the API")
        button(page, "Resume submissions").click()
        expect(button(page, "Pause submissions")).to_be_visible()
        eventually(lambda: paused() == {"paused": False, "scheduling_paused": False}, 5, "all resumed")
    finally:
        node.post("/v1/unpause")
        node.post("/v1/unpause", params={"scheduling": "true"})


def test_members_lists_the_node_with_its_address_role_and_status(node: Node, page: Page, shot: Shot) -> None:
    open_ui(page, node, "#/members")
    row = page.locator(f'[data-testid="member-row"][data-member="{NODE}"]')
    expect(row).to_be_visible()
    expect(row).to_contain_text(NODE)
    expect(row).to_contain_text("127.0.0.1")
    expect(row).to_contain_text(re.compile("server", re.IGNORECASE))
    expect(row).to_contain_text(re.compile("alive", re.IGNORECASE))
    expect(row.get_by_test_id("member-running")).to_have_text(re.compile(r"^\d+$"))  # no slot limit
    every = len(node.get("/v1/partitions").json())  # a lone server owns every partition
    expect(row.get_by_test_id("member-partitions")).to_have_text(str(every))
    shot("members")


def test_busy_shows_a_running_job_with_its_live_output_and_cancels_it(
    node: Node, page: Page, shot: Shot
) -> None:
    name = "ui-busy"
    create(node, _ticker(name))
    open_ui(page, node, "#/busy")
    expect(page.get_by_role("heading", level=1)).to_be_visible()
    node.post(f"/v1/jobs/{name}/run")
    execution = running_execution(node, name)["id"]
    row = page.locator(f'[data-testid="busy-row"][data-execution="{execution}"]')
    expect(row).to_be_visible(timeout=15_000)
    expect(row).to_contain_text(name)
    expect(row.get_by_test_id("output")).to_contain_text("line2", timeout=15_000)
    shot("busy")
    button(row, "Cancel execution").click()
    expect(row).to_have_count(0, timeout=20_000)
    assert finished_execution(node, name, execution)["success"] is False
    delete_quietly(node, name)


def test_audit_lists_the_changes_made(node: Node, page: Page, shot: Shot) -> None:
    name = "ui-audited"
    open_ui(page, node, "#/jobs/new")
    fill_job(page, name, "@manually", "true")
    button(page, "Save").click()
    expect(heading(page, name)).to_be_visible()
    button(page, "Disable").click()
    expect(button(page, "Enable")).to_be_visible()
    _nav(page, "Audit")
    rows = page.get_by_test_id("audit-row").filter(has_text=name)
    expect(rows).to_have_count(2)
    expect(rows.filter(has_text="toggle")).to_have_count(1)
    expect(rows.filter(has_text="create")).to_have_count(1)
    expect(rows.first).to_contain_text("anonymous")
    expect(page.get_by_test_id("page-info")).to_contain_text(re.compile(rf"\d+{EN_DASH}\d+ of \d+"))
    shot("audit")
    delete_quietly(node, name)


def test_the_jobs_list_updates_live_without_reloading(node: Node, page: Page) -> None:
    name = "ui-live-new"
    open_ui(page, node, "#/jobs")
    page.get_by_label("Search", exact=True).fill("ui-live-")
    expect(page.get_by_test_id("page-info")).to_be_visible()
    expect(job_row(page, name)).to_have_count(0)
    page.evaluate("window.__not_reloaded = true")
    create(node, job(name, command="false"))
    row = job_row(page, name)
    expect(row).to_be_visible(timeout=5_000)
    node.post(f"/v1/jobs/{name}/run")
    expect(row).to_contain_text("failed", timeout=15_000)
    assert page.evaluate("window.__not_reloaded === true"), "the page reloaded"
    node.request("DELETE", f"/v1/jobs/{name}")
    expect(row).to_have_count(0, timeout=5_000)


def test_on_a_phone_the_menu_opens_the_nav_and_the_form_works_with_the_keyboard(
    node: Node, contexts: Contexts, shot: Shot
) -> None:
    phone = contexts.new_page(PHONE)
    open_ui(phone, node, "#/")
    menu = button(phone, "Menu")
    expect(menu).to_be_visible()
    jobs_link = phone.get_by_role("navigation").get_by_role("link", name="Jobs", exact=True)
    expect(jobs_link).not_to_be_visible()
    menu.click()
    expect(jobs_link).to_be_visible()
    shot("phone-menu", page=phone)
    jobs_link.click()
    expect(phone).to_have_url(re.compile(r"#/jobs$"))

    name = "ui-keyboard"
    phone.goto(f"{node.url}/ui/#/jobs/new")
    keyboard = phone.keyboard
    executor = field(phone, "executor")
    tab_to(phone, executor)
    if executor.input_value() != "shell":
        if executor.evaluate("e => e.tagName") != "SELECT":
            keyboard.press("ControlOrMeta+a")
        keyboard.type("shell")
    expect(executor).to_have_value("shell")
    for label, text in (("name", name), ("schedule", "@manually"), ("executor_config.command", "echo typed")):
        target = field(phone, label)
        expect(target).to_be_visible()
        tab_to(phone, target)
        keyboard.press("ControlOrMeta+a")
        keyboard.type(text)
        assert focus_visible(target), f"no visible focus on {label}"
    save = button(phone, "Save")
    tab_to(phone, save)
    assert focus_visible(save), "no visible focus on Save"
    keyboard.press("Enter")
    expect(heading(phone, name)).to_be_visible()
    assert api_job(node, name)["executor_config"]["command"] == "echo typed"
    delete_quietly(node, name)
