"""What the web UI needs from the server: its files at /ui/, the live event stream, and who the caller is."""

from __future__ import annotations

import threading

from dkron_nats.http import ui_api
from tests.harness import Node, job, wait_for
from tests.sse import Event, events


def test_browsers_are_sent_to_the_ui_and_its_paths_answer_the_app(server: Node) -> None:
    root = server.get("/", headers={"Accept": "text/html"})
    assert root.status_code == 303
    assert root.headers["Location"] == "/ui/"
    page = server.get("/ui/")
    assert server.get("/ui").text == page.text
    if not (ui_api.UI_DIR / "index.html").is_file():
        assert page.status_code == 404
        assert "make run" in page.text
        return
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    # A path of the app itself (routed in the browser) answers the same page.
    assert server.get("/ui/jobs/anything").text == page.text


def test_ui_paths_cannot_leave_the_ui_directory(server: Node) -> None:
    for path in ("/ui/../pyproject.toml", "/ui/%2e%2e/%2e%2e/cli.py", "/ui/..%2f__init__.py"):
        answer = server.get(path)
        assert "import" not in answer.text, path
        assert answer.status_code in (200, 404, 503), path


def test_a_built_asset_is_served_with_its_type_and_cached_for_good(server: Node) -> None:
    assets = sorted((ui_api.UI_DIR / "assets").glob("*.js")) if ui_api.UI_DIR.is_dir() else []
    assert assets, "the UI is not built: `make test` builds it first (or `make ui`)"
    answer = server.get(f"/ui/assets/{assets[0].name}")
    assert answer.status_code == 200
    assert "javascript" in answer.headers["content-type"]
    assert "immutable" in answer.headers["Cache-Control"]


def test_me_says_who_calls_and_whether_auth_is_on(server: Node) -> None:
    assert server.get("/v1/me").json() == {"name": "anonymous", "role": "admin", "auth": False}


def test_events_stream_job_changes_and_executions_as_they_happen(server: Node) -> None:
    seen: list[Event] = []
    ready = threading.Event()

    def follow() -> None:
        for event in events(server.url + "/v1/events", timeout=30):
            seen.append(event)
            if event.kind == "ready":
                ready.set()
            if event.kind == "execution.finished" and event.data["job"] == "ui-events":
                return

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    assert ready.wait(15), "no ready event"
    assert server.post("/v1/jobs", json=job("ui-events", "@manually", "echo hi")).status_code == 201
    assert server.post("/v1/jobs/ui-events/run").status_code == 200
    reader.join(30)
    assert not reader.is_alive(), f"no execution.finished event; saw {[e.kind for e in seen]}"
    kinds = [e.kind for e in seen if e.data.get("job") == "ui-events"]
    assert kinds[0] == "job.created"
    assert "execution.started" in kinds
    finished = next(e for e in seen if e.kind == "execution.finished")
    assert finished.data["data"]["success"] is True
    assert finished.data["data"]["output"].strip() == "hi"
    wait_for(lambda: server.request("DELETE", "/v1/jobs/ui-events").is_success, what="the job's deletion")


def test_a_refused_job_names_the_field_in_a_header_beside_dkrons_text(server: Node) -> None:
    cases = {
        "schedule": job("ui-bad", "every now and then"),
        "retry_backoff.initial": job("ui-bad", retry_backoff={"initial": "9m", "max": "1m"}),
        "depends_on": job("ui-bad", depends_on=[{"job": "ui-bad", "on": "success"}]),
    }
    for field, body in cases.items():
        answer = server.post("/v1/jobs", json=body)
        assert answer.status_code == 400, body
        assert answer.text.startswith("Job validation failed"), answer.text
        assert answer.headers["X-Error-Field"] == field, answer.text
    assert server.get("/v1/jobs/ui-bad").status_code == 404


def test_jobs_filter_by_tag_value_whatever_the_count(server: Node) -> None:
    server.post("/v1/jobs", json=job("ui-tag-a", tags={"role": "web:2"}))
    server.post("/v1/jobs", json=job("ui-tag-b", tags={"role": "db"}))
    try:
        listed = server.get("/v1/jobs", params={"tags[role]": "web", "q": "ui-tag"})
        assert [j["name"] for j in listed.json()] == ["ui-tag-a"]
        assert listed.headers["X-Total-Count"] == "1"
    finally:
        for name in ("ui-tag-a", "ui-tag-b"):
            server.request("DELETE", f"/v1/jobs/{name}")


def test_an_executor_refusal_names_its_config_key(server: Node) -> None:
    missing_command = job("ui-bad-exec", executor_config={"shell": "true"})
    answer = server.post("/v1/jobs", json=missing_command)
    assert answer.status_code == 400
    assert answer.headers["X-Error-Field"] == "executor_config.command"
    bad_url = {
        **job("ui-bad-exec"),
        "executor": "http",
        "executor_config": {"method": "GET", "url": "ftp://x"},
    }
    answer = server.post("/v1/jobs", json=bad_url)
    assert answer.status_code == 400
    assert answer.headers["X-Error-Field"] == "executor_config.url"


def test_jobs_sort_by_status_and_show_their_fan_in_children(server: Node) -> None:
    names = ["ui-st-parent", "ui-st-child"]
    server.post("/v1/jobs", json=job(names[0]))
    server.post("/v1/jobs", json=job(names[1], depends_on=[{"job": names[0], "on": "success"}]))
    try:
        parent = server.get(f"/v1/jobs/{names[0]}").json()
        assert parent["depended_on_by"] == [names[1]]
        assert server.get(f"/v1/jobs/{names[1]}").json()["depended_on_by"] is None
        by_status = server.get("/v1/jobs", params={"_sort": "status", "_order": "DESC"})
        assert by_status.status_code == 200
        statuses = [j["status"] for j in by_status.json()]
        assert statuses == sorted(statuses, reverse=True)
    finally:
        for name in reversed(names):
            server.request("DELETE", f"/v1/jobs/{name}")
