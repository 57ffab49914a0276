"""The UI with auth on: the login screen, tokens by role, controls hidden from roles that may not use them."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.harness import Node, job, running
from tests.ui.conftest import Console, Shot
from tests.ui.pages import button, create, heading, open_ui

ADMIN = "admin-" + uuid.uuid4().hex
TOKEN_KEY = "dkron-nats-token"
JOB = "ui-auth-job"


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    secured = Node(
        tmp_path_factory.mktemp("ui-auth"),
        name="ui-auth",
        extra=["--auth"],
        env={"DKRON_NATS_BOOTSTRAP_TOKEN": ADMIN},
    )
    with running(secured) as started:
        create(started, job(JOB, command="echo secured"), headers=_bearer(ADMIN))
        yield started


def _token(node: Node, name: str, role: str) -> str:
    answer = node.post("/v1/tokens", json={"name": name, "role": role}, headers=_bearer(ADMIN))
    assert answer.status_code == 201, f"creating token {name}: {answer.status_code} {answer.text}"
    token: str = answer.json()["token"]
    return token


def _log_in(page: Page, token: str) -> None:
    page.get_by_label("API token", exact=True).fill(token)
    button(page, "Log in").click()


@pytest.fixture
def unauthorized(console: Console) -> Console:
    """Before logging in (and after logging out) the app's calls answer 401: expected noise."""
    console.allow(r"status of 401")
    return console


def test_login_screen_refuses_a_wrong_token_and_admits_the_admin(
    node: Node, page: Page, unauthorized: Console, shot: Shot
) -> None:
    open_ui(page, node, "#/")
    token_input = page.get_by_label("API token", exact=True)
    expect(token_input).to_be_visible()
    expect(page.get_by_role("navigation").get_by_role("link", name="Jobs", exact=True)).to_have_count(0)
    shot("login")

    _log_in(page, "not-a-token")
    expect(page.get_by_role("alert")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text(re.compile(r"\S"))
    expect(token_input).to_be_visible()

    token_input.fill(ADMIN)
    button(page, "Log in").click()
    expect(page.get_by_test_id("whoami")).to_contain_text("bootstrap")
    expect(page.get_by_role("navigation").get_by_role("link", name="Audit", exact=True)).to_be_visible()
    assert page.evaluate(f"sessionStorage.getItem('{TOKEN_KEY}')") == ADMIN
    page.reload()  # the token outlives a reload (sessionStorage)
    expect(page.get_by_test_id("whoami")).to_contain_text("bootstrap")
    page.goto(f"{node.url}/ui/#/jobs/{JOB}")
    expect(heading(page, JOB)).to_be_visible()
    for control in ("Run now", "Edit", "Delete"):
        expect(button(page, control).or_(page.get_by_role("link", name=control, exact=True))).to_be_visible()


def test_a_read_token_sees_no_controls_it_may_not_use(node: Node, page: Page, unauthorized: Console) -> None:
    reader = _token(node, "ui-reader", "read")
    open_ui(page, node, "#/")
    _log_in(page, reader)
    expect(page.get_by_test_id("whoami")).to_contain_text("ui-reader")
    nav = page.get_by_role("navigation")
    expect(nav.get_by_role("link", name="Jobs", exact=True)).to_be_visible()
    expect(nav.get_by_role("link", name="Audit", exact=True)).to_have_count(0)

    page.goto(f"{node.url}/ui/#/jobs")
    expect(page.locator(f'[data-testid="job-row"][data-job="{JOB}"]')).to_be_visible()
    expect(page.get_by_role("link", name="New job", exact=True)).to_have_count(0)
    for bulk in ("Run selected", "Toggle selected", "Delete selected"):
        expect(button(page, bulk)).to_have_count(0)

    page.goto(f"{node.url}/ui/#/jobs/{JOB}")
    expect(heading(page, JOB)).to_be_visible()
    expect(page.get_by_test_id("job-summary")).to_be_visible()
    for control in ("Run now", "Force run", "Disable", "Enable", "Edit", "Delete"):
        expect(button(page, control).or_(page.get_by_role("link", name=control, exact=True))).to_have_count(0)

    page.goto(f"{node.url}/ui/#/settings")
    expect(page.get_by_test_id("pause-state")).to_be_visible()
    for control in ("Pause submissions", "Resume submissions", "Pause scheduling", "Resume scheduling"):
        expect(button(page, control)).to_have_count(0)


def test_an_operator_token_runs_but_does_not_edit(node: Node, page: Page, unauthorized: Console) -> None:
    operator = _token(node, "ui-operator", "operator")
    open_ui(page, node, "#/")
    _log_in(page, operator)
    expect(page.get_by_test_id("whoami")).to_contain_text("ui-operator")
    page.goto(f"{node.url}/ui/#/jobs/{JOB}")
    expect(heading(page, JOB)).to_be_visible()
    expect(button(page, "Run now")).to_be_visible()
    expect(button(page, "Force run")).to_be_visible()
    for control in ("Edit", "Delete"):
        expect(button(page, control).or_(page.get_by_role("link", name=control, exact=True))).to_have_count(0)
    button(page, "Run now").click()
    expect(page.get_by_test_id("execution-row").first).to_have_attribute(
        "data-status", "success", timeout=20_000
    )
    page.goto(f"{node.url}/ui/#/jobs")
    expect(page.get_by_role("link", name="New job", exact=True)).to_have_count(0)
    page.goto(f"{node.url}/ui/#/settings")
    expect(page.get_by_test_id("pause-state")).to_be_visible()
    expect(button(page, "Pause scheduling")).to_have_count(0)


def test_log_out_returns_to_the_login_screen_and_forgets_the_token(
    node: Node, page: Page, unauthorized: Console
) -> None:
    open_ui(page, node, "#/")
    _log_in(page, ADMIN)
    expect(page.get_by_test_id("whoami")).to_contain_text("bootstrap")
    button(page, "Log out").click()
    expect(page.get_by_label("API token", exact=True)).to_be_visible()
    assert page.evaluate(f"sessionStorage.getItem('{TOKEN_KEY}')") is None
    page.reload()
    expect(page.get_by_label("API token", exact=True)).to_be_visible()
    expect(page.get_by_test_id("whoami")).to_have_count(0)
