"""Dkron's REST API contract, checked route by route against one real `dkron-nats agent --server`.

The node is shared by every test (the session fixture `server`), so each test uses its own job names
(a uuid suffix) and filters lists down to them. Executions use `@manually` jobs run through the API, and
waits poll with `wait_for`, never a sleep.

Where dkron-nats deliberately differs from Dkron, the test says so in a comment ("Dkron ..."):
an invalid `_sort` is a 400 (Dkron: 500), `_start > _end` is an empty page (Dkron: panic, 500),
DELETE …/executions of an unknown job is a 404 (Dkron: 500), tag keys and values must be NATS-safe tokens,
`dependent_jobs` is always derived from the children, and `Location` is always `/v1/jobs/<name>`. CORS:
Dkron answers `Access-Control-Allow-Origin: *`; dkron-nats echoes only the `--cors-origin` origins (the
shared server allows `http://ui.example`) and refuses other origins (`test_api_security.py`).
"""

from __future__ import annotations

import itertools
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.conftest import UI_ORIGIN
from tests.harness import Node, executions, finished, job, wait_for

ZERO = "0001-01-01T00:00:00Z"
DKRON_JOB_KEYS = [
    "id",
    "name",
    "displayname",
    "timezone",
    "schedule",
    "owner",
    "owner_email",
    "success_count",
    "error_count",
    "last_success",
    "last_error",
    "disabled",
    "tags",
    "metadata",
    "retries",
    "dependent_jobs",
    "parent_job",
    "processors",
    "concurrency",
    "executor",
    "executor_config",
    "status",
    "next",
    "ephemeral",
    "starts_at",
    "expires_at",
]
# Dkron's keys in Dkron's order, then dkron-nats's additions (clients that do not know them ignore them).
JOB_KEYS = [
    *DKRON_JOB_KEYS,
    "misfire_policy",
    "starting_deadline",
    "misfire_max",
    "retry_backoff",
    "retry_on_other_node",
    "depends_on",
    "depended_on_by",
    "history_limit",
    "history_max_age",
    "dst_policy",
    "notify_on",
    "parameters",
    "partition",
]
ECHO_KEYS = [key for key in JOB_KEYS if key not in ("depended_on_by", "partition")]
"""A save answers the job as parsed: links derived from other jobs, and the partition, are in stored jobs
only."""
MEMBER_KEYS = [
    "Name",
    "Addr",
    "Port",
    "Tags",
    "Status",
    "ProtocolMin",
    "ProtocolMax",
    "ProtocolCur",
    "DelegateMin",
    "DelegateMax",
    "DelegateCur",
    "MaxConcurrentExecutions",
    "ExecutionsRunning",
    "ExecutionsQueued",
    "Partitions",
]
SERF_KEYS = {
    "members",
    "failed",
    "left",
    "health_score",
    "member_time",
    "event_time",
    "query_time",
    "intent_queue",
    "event_queue",
    "query_queue",
    "encrypted",
    "coordinate_resets",
}
SORTABLE = [
    "id",
    "name",
    "displayname",
    "schedule",
    "success_count",
    "error_count",
    "last_success",
    "last_error",
    "next",
]
EXECUTION_ID = re.compile(r"^\d+-n1$")
STATS_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}T00:00:00Z$")
MIB = 1024 * 1024


# ---------------------------------------------------------------------------------------------------------
# Helpers


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def path_of(name: str) -> str:
    return f"/v1/jobs/{quote(name, safe='')}"


def parse_time(text: str | None) -> datetime:
    """An API time as an aware datetime; null and the zero time become datetime.min (UTC)."""
    if text is None or text == ZERO:
        return datetime.min.replace(tzinfo=UTC)
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def save(server: Node, body: dict[str, Any], method: str = "POST", path: str = "/v1/jobs") -> dict[str, Any]:
    response = server.request(method, path, json=body)
    assert response.status_code == 201, response.text
    echoed: dict[str, Any] = response.json()
    return echoed


def create(server: Node, name: str, **fields: Any) -> dict[str, Any]:
    """Create a shell job (default `@manually`, `echo hello`) and return the echo."""
    command = fields.pop("command", "echo hello")
    schedule = fields.pop("schedule", "@manually")
    return save(server, job(name, schedule=schedule, command=command, **fields))


def get_job(server: Node, name: str) -> dict[str, Any]:
    response = server.get(path_of(name))
    assert response.status_code == 200, (name, response.status_code, response.text)
    found: dict[str, Any] = response.json()
    return found


def is_absent(server: Node, name: str) -> bool:
    response = server.get(path_of(name))
    return response.status_code == 404 and response.content == b""


def run(server: Node, name: str, suffix: str = "") -> httpx.Response:
    return server.post(path_of(name) + suffix)


def run_and_wait(server: Node, name: str, count: int = 1) -> list[dict[str, Any]]:
    """Run the job now and return its finished executions once there are `count` of them."""
    response = run(server, name)
    assert response.status_code == 200, response.text
    return wait_for(lambda: finished(server, name, count), 15, f"{count} finished executions of {name}")


def listing(server: Node, **params: Any) -> tuple[int, list[dict[str, Any]]]:
    response = server.get("/v1/jobs", params=params)
    assert response.status_code == 200, response.text
    return int(response.headers["X-Total-Count"]), response.json()


def names_of(jobs: list[dict[str, Any]]) -> list[str]:
    return [j["name"] for j in jobs]


def assert_text(response: httpx.Response, status: int, body: str | None = None, prefix: str = "") -> None:
    """A plain-text error answer: the status, and the exact body or a body starting with `prefix`."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("text/plain"), response.headers
    assert response.headers["content-type"].count("charset") <= 1, response.headers
    if body is not None:
        assert response.text == body
    assert response.text.startswith(prefix), response.text


def stats_today(server: Node) -> dict[str, Any]:
    entries = server.get("/v1/stats", params={"days": 1}).json()["stats"]
    assert len(entries) == 1
    today: dict[str, Any] = entries[0]
    return today


# ---------------------------------------------------------------------------------------------------------
# Headers, CORS, pretty output, routing


def test_every_response_carries_whom_and_cors_headers(server: Node) -> None:
    name = unique("hdr")
    create(server, name)
    cors = {"Origin": UI_ORIGIN}
    samples = [
        server.get("/v1", headers=cors),
        server.get("/v1/jobs", headers=cors),
        server.get(path_of(name), headers=cors),
        server.get(path_of(unique("missing")), headers=cors),
        server.post("/v1/jobs", content=b"{", headers=cors),
        server.post("/v1/jobs", content=b" " * (MIB + 1), headers=cors),
        server.post(path_of(unique("missing")) + "/run", headers=cors),
        server.get("/v1/no/such/route", headers=cors),
        server.post("/v1/no/such/route", headers=cors),
        server.get("/health", headers=cors),
        server.get("/", headers={"Accept": "text/html", **cors}),
    ]
    for response in samples:
        where = f"{response.request.method} {response.request.url} -> {response.status_code}"
        assert response.headers.get("X-Whom") == "n1", where
        assert response.headers.get("Access-Control-Allow-Origin") == UI_ORIGIN, where
        assert "Origin" in response.headers.get("Vary", ""), where
        assert "X-Total-Count" in response.headers.get("Access-Control-Expose-Headers", ""), where
    assert "Access-Control-Allow-Origin" not in server.get("/v1/jobs").headers  # no Origin: no CORS


def test_cors_preflight_answers_204_with_allowed_methods(server: Node) -> None:
    headers = {"Origin": UI_ORIGIN, "Access-Control-Request-Method": "PUT"}
    for path in ("/v1/jobs", path_of(unique("any")), path_of(unique("any")) + "/toggle", "/v1/pause"):
        response = server.request("OPTIONS", path, headers=headers)
        assert response.status_code == 204, path
        assert response.content == b""
        assert response.headers["Access-Control-Allow-Origin"] == UI_ORIGIN
        methods = response.headers["Access-Control-Allow-Methods"]
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            assert method in methods
        assert "X-Total-Count" in response.headers["Access-Control-Expose-Headers"]
        assert response.headers["X-Whom"] == "n1"


@pytest.mark.parametrize("path", ["/v1", "/v1/jobs", "/v1/members", "/v1/stats", "/v1/pause"])
def test_pretty_gives_indented_json_with_the_same_data(server: Node, path: str) -> None:
    plain = server.get(path)
    for value in ("", "1", "false"):
        pretty = server.get(path, params={"pretty": value})
        assert pretty.status_code == 200
        assert pretty.headers["content-type"] == "application/json; charset=utf-8"
        assert "\n " in pretty.text
        assert "\n " not in plain.text
        if path != "/v1/members":  # members carry a fresh random id on every request
            assert pretty.json() == plain.json()


def test_unknown_routes_answer_gins_404_text(server: Node) -> None:
    for method, path in [
        ("GET", "/v1/nope"),
        ("POST", "/v1/nope"),
        ("GET", "/nothing/here"),
        ("DELETE", "/v1/pause"),
        ("PUT", "/v1/jobs"),
    ]:
        response = server.request(method, path)
        assert_text(response, 404, "404 page not found")


def test_root_redirects_browsers_to_the_ui(server: Node) -> None:
    browser = server.get("/", headers={"Accept": "text/html,application/xhtml+xml"})
    assert browser.status_code == 303
    assert browser.headers["Location"] == "/ui/"
    assert server.get("/", headers={"Accept": "application/json"}).status_code == 404


# ---------------------------------------------------------------------------------------------------------
# Cluster endpoints: /v1, members, leader, isleader, health


@pytest.mark.parametrize("path", ["/v1", "/v1/"])
def test_index_status_shape(server: Node, path: str) -> None:
    response = server.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    body = response.json()
    assert list(body) == ["agent", "serf", "tags"]
    assert body["agent"]["name"] == "n1"
    assert isinstance(body["agent"]["version"], str)
    assert body["agent"]["version"]
    assert set(body["serf"]) == SERF_KEYS
    assert all(isinstance(v, str) for v in body["serf"].values())
    assert body["serf"]["members"] == "1"
    assert isinstance(body["tags"], dict)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in body["tags"].items())


def test_members_have_serfs_shape_and_a_total_count(server: Node) -> None:
    response = server.get("/v1/members", params={"_sort": "whatever", "_start": 5, "_end": 6})
    assert response.status_code == 200
    members = response.json()
    assert response.headers["X-Total-Count"] == str(len(members)) == "1"
    member = members[0]
    assert list(member) == [*MEMBER_KEYS, "id", "statusText"]
    assert member["Name"] == "n1"
    assert isinstance(member["Addr"], str)
    assert member["Addr"]
    assert isinstance(member["Port"], int)
    assert isinstance(member["Tags"], dict)
    assert member["Status"] == 1
    assert member["statusText"] == "alive"
    for key in MEMBER_KEYS[5:]:
        assert isinstance(member[key], int)
    uuid.UUID(member["id"])
    assert server.get("/v1/members").json()[0]["id"] != member["id"]  # a new id on every request


def test_leader_is_a_member_without_id_and_status_text(server: Node) -> None:
    response = server.get("/v1/leader")
    assert response.status_code == 200
    leader = response.json()
    assert list(leader) == MEMBER_KEYS
    assert leader["Name"] == "n1"
    assert leader["Status"] == 1


def test_isleader_answers_a_json_string(server: Node) -> None:
    response = server.get("/v1/isleader")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    assert response.json() == "I am a leader"


def test_health(server: Node) -> None:
    response = server.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "healthy", "leader": True}


# ---------------------------------------------------------------------------------------------------------
# Busy, pause, stats


def test_busy_lists_a_running_execution(server: Node) -> None:
    name = unique("busy")
    create(server, name, command="sleep 2")
    assert run(server, name).status_code == 200

    def running() -> dict[str, Any] | None:
        response = server.get("/v1/busy")
        assert response.status_code == 200
        items = response.json()
        assert response.headers["X-Total-Count"] == str(len(items))
        return next((e for e in items if e["job_name"] == name), None)

    execution = wait_for(running, 10, "the sleep to show in /v1/busy")
    assert execution["finished_at"] == ZERO
    assert execution["success"] is False
    assert execution["node_name"] == "n1"
    assert EXECUTION_ID.match(execution["id"])
    assert "output_truncated" not in execution
    assert parse_time(execution["started_at"]) <= datetime.now(UTC)
    wait_for(lambda: finished(server, name, 1), 15, "the sleep to finish")
    assert all(e["job_name"] != name for e in server.get("/v1/busy").json())


def test_pause_blocks_job_writes_but_not_toggle_or_run(server: Node) -> None:
    existing = unique("paused")
    create(server, existing)
    before = get_job(server, existing)
    newcomer = unique("blocked")
    try:
        response = server.post("/v1/pause")
        assert response.status_code == 200
        # Dkron's {"paused": bool}, plus the scheduling pause (Go clients ignore the extra key).
        assert response.json() == {"paused": True, "scheduling_paused": False}
        assert server.post("/v1/pause").json()["paused"] is True  # idempotent
        assert server.get("/v1/pause").json()["paused"] is True

        blocked = [
            server.post("/v1/jobs", json=job(newcomer)),
            server.request("PATCH", "/v1/jobs", json=job(newcomer)),
            server.request("PUT", path_of(newcomer), json=job(newcomer)),
            server.request("PUT", path_of(existing), json=job(existing, displayname="changed")),
        ]
        for response in blocked:
            assert_text(response, 503, "New job submissions are currently paused")
        assert is_absent(server, newcomer)
        assert get_job(server, existing) == before

        toggled = server.post(path_of(existing) + "/toggle")
        assert toggled.status_code == 200
        assert toggled.json()["disabled"] is True
        toggled = server.post(path_of(existing) + "/toggle")
        assert toggled.status_code == 200
        assert toggled.json()["disabled"] is False
        assert run(server, existing).status_code == 200
        wait_for(lambda: finished(server, existing, 1), 15, "the run while paused")

        restored = unique("restored")
        assert _restore(server, json.dumps([job(restored)]).encode()).status_code == 200
        assert get_job(server, restored)["name"] == restored
        assert server.request("DELETE", path_of(restored)).status_code == 200
    finally:
        unpaused = server.post("/v1/unpause")
    assert unpaused.status_code == 200
    assert unpaused.json()["paused"] is False
    assert server.get("/v1/pause").json() == {"paused": False, "scheduling_paused": False}
    create(server, newcomer)


@pytest.mark.parametrize(
    ("days", "count"),
    [(None, 30), ("7", 7), ("1", 1), ("0", 30), ("-3", 30), ("abc", 30), ("--5", 30), ("", 30), ("999", 365)],
)
def test_stats_days(server: Node, days: str | None, count: int) -> None:
    response = server.get("/v1/stats", params={} if days is None else {"days": days})
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["stats"]
    entries = body["stats"]
    assert len(entries) == count
    for entry in entries:
        assert list(entry) == ["date", "success_count", "failed_count"]
        assert STATS_DATE.match(entry["date"]), entry
    dates = [datetime.fromisoformat(e["date"].replace("Z", "+00:00")) for e in entries]
    assert all(b - a == timedelta(days=1) for a, b in itertools.pairwise(dates))
    assert datetime.now(UTC) - dates[-1] < timedelta(days=1, minutes=1)


def test_stats_count_finished_executions(server: Node) -> None:
    good, bad = unique("stat-ok"), unique("stat-ko")
    create(server, good)
    create(server, bad, command="false")
    before = stats_today(server)
    run_and_wait(server, good)
    run_and_wait(server, bad)
    after = wait_for(
        lambda: (s := stats_today(server))["failed_count"] > before["failed_count"] and s,
        10,
        "the stats to count the failure",
    )
    assert after["success_count"] >= before["success_count"] + 1
    assert after["failed_count"] >= before["failed_count"] + 1


# ---------------------------------------------------------------------------------------------------------
# Jobs: create, update, read, delete


@pytest.mark.parametrize(
    ("method", "path_for"),
    [
        ("POST", lambda name: "/v1/jobs"),
        ("PATCH", lambda name: "/v1/jobs"),
        ("PUT", lambda name: path_of(name)),
    ],
    ids=["post", "patch", "put"],
)
def test_save_answers_201_with_the_echoed_job(server: Node, method: str, path_for: Any) -> None:
    name = unique("save")
    body = job(name, schedule="@every 1h", displayname="Saved", metadata={"k": "v"})
    response = server.request(method, path_for(name), json=body)
    assert response.status_code == 201, response.text
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    assert response.headers["Location"] == f"/v1/jobs/{name}"
    echo = response.json()
    assert list(echo) == ECHO_KEYS
    assert echo["id"] == echo["name"] == name
    assert echo["concurrency"] == "allow"
    assert echo["next"] == ZERO
    assert echo["status"] == ""
    assert echo["displayname"] == "Saved"
    assert echo["metadata"] == {"k": "v"}
    assert echo["executor_config"] == {"command": "true"}
    for key in ("last_success", "last_error", "tags", "dependent_jobs", "starts_at", "expires_at"):
        assert echo[key] is None, key
    # updating answers 201 as well, never 200
    again = server.request(method, path_for(name), json=body | {"displayname": "Again"})
    assert again.status_code == 201
    assert get_job(server, name)["displayname"] == "Again"


def test_get_returns_the_stored_job(server: Node) -> None:
    parent, child = unique("getp"), unique("getc")
    before = datetime.now(UTC)
    create(server, parent, schedule="@every 1h", id="ignored", concurrency="forbid")
    create(server, child, schedule="", parent_job=parent)
    response = server.get(path_of(parent))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    stored = response.json()
    assert list(stored) == JOB_KEYS
    assert stored["id"] == parent
    assert stored["processors"] == {}
    assert stored["concurrency"] == "forbid"
    assert stored["dependent_jobs"] == [child]
    assert before + timedelta(hours=1) <= parse_time(stored["next"]) <= datetime.now(UTC) + timedelta(hours=1)
    child_job = get_job(server, child)
    assert child_job["parent_job"] == parent
    assert child_job["next"] == ZERO
    assert child_job["dependent_jobs"] is None


def test_cron_job_has_a_future_next(server: Node) -> None:
    name = unique("cron")
    before = datetime.now(UTC)
    create(server, name, schedule="0 */5 * * * *")
    nxt = parse_time(get_job(server, name)["next"])
    assert before < nxt <= datetime.now(UTC) + timedelta(minutes=5)
    assert nxt.second == 0
    assert nxt.minute % 5 == 0


def test_get_unknown_job_is_404_with_an_empty_body(server: Node) -> None:
    response = server.get(path_of(unique("ghost")))
    assert response.status_code == 404
    assert response.content == b""


def test_delete_returns_the_deleted_job(server: Node) -> None:
    name = unique("del")
    create(server, name, displayname="Doomed")
    run_and_wait(server, name)
    response = server.request("DELETE", path_of(name))
    assert response.status_code == 200
    deleted = response.json()
    assert list(deleted) == JOB_KEYS
    assert deleted["name"] == name
    assert deleted["displayname"] == "Doomed"
    assert is_absent(server, name)
    assert server.get(path_of(name) + "/executions").status_code == 404
    assert server.request("DELETE", path_of(name)).status_code == 404
    create(server, name)  # the same name again starts with no history
    assert executions(server, name) == []
    assert get_job(server, name)["success_count"] == 0


def test_delete_unknown_job_is_404(server: Node) -> None:
    assert server.request("DELETE", path_of(unique("ghost"))).status_code == 404


def test_delete_parent_with_children_is_404_and_keeps_it(server: Node) -> None:
    parent, child = unique("delp"), unique("delc")
    create(server, parent)
    create(server, child, parent_job=parent)
    response = server.request("DELETE", path_of(parent))
    assert response.status_code == 404
    assert get_job(server, parent)["dependent_jobs"] == [child]
    assert server.request("DELETE", path_of(child)).status_code == 200
    assert get_job(server, parent)["dependent_jobs"] is None
    assert server.request("DELETE", path_of(parent)).status_code == 200


# ---------------------------------------------------------------------------------------------------------
# Jobs: input handling


def test_request_content_type_is_not_checked(server: Node) -> None:
    name = unique("ctype")
    body = json.dumps(job(name)).encode()
    for content_type in ("text/plain", "application/x-www-form-urlencoded", ""):
        response = server.post("/v1/jobs", content=body, headers={"Content-Type": content_type})
        assert response.status_code == 201, (content_type, response.text)
    assert get_job(server, name)["name"] == name


def test_unknown_fields_are_ignored(server: Node) -> None:
    name = unique("extra")
    body = job(name) | {"command": "echo legacy", "shell": True, "whatever": {"deep": [1, 2]}}
    echo = save(server, body)
    assert list(echo) == ECHO_KEYS
    assert get_job(server, name)["executor_config"] == {"command": "true"}


def test_null_string_fields_are_accepted_as_empty(server: Node) -> None:
    name = unique("nulls")
    nulls = dict.fromkeys(["displayname", "timezone", "owner", "owner_email", "parent_job", "status"])
    body = job(name) | nulls | {"tags": None, "metadata": None, "processors": None, "concurrency": None}
    echo = save(server, body)
    stored = get_job(server, name)
    for key in ("displayname", "timezone", "owner", "owner_email", "parent_job", "status"):
        assert (echo[key], stored[key]) == ("", ""), key
    assert echo["concurrency"] == stored["concurrency"] == "allow"
    assert stored["tags"] is None
    assert stored["metadata"] is None
    assert stored["processors"] == {}


def test_concurrency_defaults_to_allow_only_when_absent(server: Node) -> None:
    absent, empty, forbid = unique("cabs"), unique("cempty"), unique("cforbid")
    assert save(server, job(absent))["concurrency"] == "allow"
    assert save(server, job(empty, concurrency=""))["concurrency"] == ""
    assert save(server, job(forbid, concurrency="forbid"))["concurrency"] == "forbid"
    stored = [get_job(server, n)["concurrency"] for n in (absent, empty, forbid)]
    assert stored == ["allow", "", "forbid"]


def test_time_fields_accept_rfc3339_and_datetime_local(server: Node) -> None:
    name = unique("times")
    body = job(
        name,
        starts_at="2030-01-02T15:04",
        expires_at="2031-01-01T00:00:00+02:00",
        last_success="2024-05-06T07:08:09.123456789Z",
        last_error="2024-05-06T07:08",
    )
    echo = save(server, body)
    stored = get_job(server, name)
    expected = {
        "starts_at": "2030-01-02T15:04:00Z",
        "expires_at": "2030-12-31T22:00:00Z",
        "last_success": "2024-05-06T07:08:09.123456Z",
        "last_error": "2024-05-06T07:08:00Z",
    }
    for key, value in expected.items():
        assert stored[key] == value, key
        assert parse_time(echo[key]) == parse_time(value), key
    cleared = save(server, body | {"starts_at": None, "expires_at": None})
    assert cleared["starts_at"] is None
    assert get_job(server, name)["starts_at"] is None


def _bad_cases() -> list[Any]:
    """(changes to a valid job, status, exact body or None, body prefix)."""
    parse = "Unable to parse payload: "
    invalid = "Job validation failed: "
    return [
        pytest.param(b'{"name": "x", ', 400, None, parse, id="malformed-json"),
        pytest.param(b"", 400, None, parse, id="empty-body"),
        pytest.param(b"[1, 2]", 400, None, parse, id="array-body"),
        pytest.param({"tags": {"role": 1}}, 400, None, parse, id="tag-value-not-string"),
        pytest.param({"retries": "1"}, 400, None, parse, id="retries-string"),
        pytest.param({"retries": 2**64}, 400, None, "", id="retries-overflow"),
        pytest.param({"disabled": "true"}, 400, None, parse, id="disabled-string"),
        pytest.param({"metadata": {"a": 1}}, 400, None, parse, id="metadata-not-string"),
        pytest.param({"executor_config": {"command": ["a"]}}, 400, None, parse, id="config-not-string"),
        pytest.param({"processors": {"log": "x"}}, 400, None, parse, id="processor-not-map"),
        pytest.param({"schedule": "* * *"}, 400, None, invalid + "can't parse job schedule", id="cron"),
        pytest.param({"schedule": ""}, 400, None, invalid + "can't parse job schedule", id="no-schedule"),
        pytest.param({"schedule": "@at tomorrow"}, 400, None, invalid, id="bad-at"),
        pytest.param({"timezone": "Mars/Olympus"}, 400, None, invalid, id="timezone"),
        pytest.param({"timezone": "../../etc/passwd"}, 400, None, invalid, id="timezone-path"),
        pytest.param(
            {"concurrency": "sometimes"},
            400,
            'Job validation failed: invalid concurrency policy value, use "allow", "forbid" or "replace".',
            "",
            id="concurrency",
        ),
        pytest.param({"retries": -1}, 400, None, invalid, id="negative-retries"),
        pytest.param(
            {"notify_on": "sometimes"},
            400,
            'Job validation failed: invalid notify_on "sometimes": '
            'use "always", "failure", "recovery" or "failure_and_recovery".',
            "",
            id="notify-on",
        ),
        pytest.param({"notify_on": ["failure"]}, 400, None, parse, id="notify-on-not-string"),
        pytest.param({"executor_config": {"command": "x", "timeout": "30"}}, 400, None, invalid, id="tmo"),
        pytest.param({"executor_config": {"command": "x", "mem_limit": "a"}}, 400, None, invalid, id="mem"),
        pytest.param({"tags": {"role": "web.*"}}, 400, None, invalid, id="tag-value-wildcard"),
        pytest.param({"tags": {"a.b": "x"}}, 400, None, invalid, id="tag-key-dot"),
        pytest.param({"tags": {"role": ">"}}, 400, None, invalid, id="tag-value-gt"),
        pytest.param({"tags": {"role": "$SYS"}}, 400, None, invalid, id="tag-value-sys"),
        pytest.param({"tags": {"role": "web:x"}}, 400, None, invalid, id="tag-count-not-number"),
        pytest.param({"tags": {"role": ""}}, 400, None, invalid, id="tag-value-empty"),
        pytest.param({"starts_at": "tomorrow"}, 400, None, parse, id="bad-time"),
        pytest.param({"expires_at": "2030-13-01T00:00"}, 400, None, parse, id="bad-datetime-local"),
        pytest.param({"last_success": "2030-01-01T00:00:00"}, 400, None, parse, id="time-without-zone"),
        pytest.param({"executor_config": {"command": "x" * (MIB + 10)}}, 413, None, "", id="too-large"),
    ]


@pytest.mark.parametrize(("change", "status", "body", "prefix"), _bad_cases())
def test_bad_input_is_rejected_and_changes_nothing(
    server: Node, change: dict[str, Any] | bytes, status: int, body: str | None, prefix: str
) -> None:
    name = unique("bad")
    create(server, name, displayname="original")
    before = get_job(server, name)
    if isinstance(change, bytes):
        response = server.post("/v1/jobs", content=change)
    else:
        request = job(name, displayname="changed") | change
        response = server.post("/v1/jobs", json=request)
    assert_text(response, status, body, prefix)
    assert len(response.text) > 10
    assert get_job(server, name) == before


@pytest.mark.parametrize("char", ["A", "Ü", " ", ".", "*", ">", "$", "="])
def test_illegal_name_is_rejected(server: Node, char: str) -> None:
    name = f"x{char}{uuid.uuid4().hex[:8]}"
    response = server.post("/v1/jobs", json=job(name))
    assert_text(response, 400, f"Job validation failed: name contains illegal character '{char}'.")
    assert is_absent(server, name)


def test_unicode_lower_case_names_are_allowed(server: Node) -> None:
    name = f"größe-{uuid.uuid4().hex[:8]}"
    assert create(server, name)["name"] == name
    assert get_job(server, name)["id"] == name
    assert listing(server, q=name)[0] == 1


def test_empty_name_is_rejected(server: Node) -> None:
    for body in (job(""), {"schedule": "@manually"}, job("") | {"name": None}):
        assert_text(server.post("/v1/jobs", json=body), 400, prefix="Job validation failed: name")


def test_put_and_patch_validate_like_post(server: Node) -> None:
    name = unique("putbad")
    create(server, name)
    before = get_job(server, name)
    bad_name = job("Bad Name")
    assert_text(server.request("PUT", path_of(name), json=bad_name), 400, prefix="Job validation failed")
    assert_text(server.request("PATCH", "/v1/jobs", json=bad_name), 400, prefix="Job validation failed")
    assert_text(server.request("PUT", path_of(name), content=b"{"), 400, prefix="Unable to parse payload: ")
    bad_tz = job(name, timezone="Nowhere/Land")
    assert_text(server.request("PATCH", "/v1/jobs", json=bad_tz), 400, prefix="Job validation failed")
    assert get_job(server, name) == before


def test_self_parent_is_400(server: Node) -> None:
    name = unique("self")
    response = server.post("/v1/jobs", json=job(name, parent_job=name))
    assert_text(response, 400, prefix="Job validation failed: ")
    assert is_absent(server, name)


def test_missing_parent_is_404_with_dkrons_text(server: Node) -> None:
    name = unique("orphan")
    response = server.post("/v1/jobs", json=job(name, parent_job=unique("nobody")))
    assert_text(response, 404, "specified parent job not found")
    assert is_absent(server, name)


# ---------------------------------------------------------------------------------------------------------
# Jobs: Dkron's update rules (§3.4)


def test_update_keeps_larger_counters_later_times_and_status(server: Node) -> None:
    name = unique("upd")
    create(
        server,
        name,
        success_count=5,
        error_count=3,
        last_success="2024-01-05T00:00:00Z",
        last_error="2024-01-01T00:00:00Z",
        status="success",
    )
    body = job(
        name,
        displayname="updated",
        success_count=1,
        error_count=10,
        last_success="2024-01-01T00:00:00Z",
        last_error="2024-02-01T00:00:00Z",
        status="failed",
    )
    echo = save(server, body, "PUT", path_of(name))
    assert (echo["success_count"], echo["error_count"], echo["status"]) == (1, 10, "failed")  # the request
    stored = get_job(server, name)
    assert stored["displayname"] == "updated"
    assert (stored["success_count"], stored["error_count"]) == (5, 10)
    assert stored["last_success"] == "2024-01-05T00:00:00Z"
    assert stored["last_error"] == "2024-02-01T00:00:00Z"
    assert stored["status"] == "success"


def test_update_is_a_full_replace_of_the_definition(server: Node) -> None:
    name = unique("repl")
    create(server, name, displayname="d", metadata={"a": "b"}, tags={"role": "dkron"}, retries=2)
    save(server, job(name), "PUT", path_of(name))
    stored = get_job(server, name)
    definition = (stored["displayname"], stored["metadata"], stored["tags"], stored["retries"])
    assert definition == ("", None, None, 0)


def test_changing_parent_moves_the_child(server: Node) -> None:
    first, second, child = unique("par1"), unique("par2"), unique("kid")
    create(server, first)
    create(server, second)
    create(server, child, parent_job=first)
    assert get_job(server, first)["dependent_jobs"] == [child]
    save(server, job(child, parent_job=second), "PUT", path_of(child))
    assert get_job(server, first)["dependent_jobs"] is None
    assert get_job(server, second)["dependent_jobs"] == [child]
    save(server, job(child), "PUT", path_of(child))
    assert get_job(server, second)["dependent_jobs"] is None


def test_dependent_jobs_are_derived_not_taken_from_the_body(server: Node) -> None:
    # Dkron stores a submitted list when the stored one is empty; dkron-nats always derives it
    parent, child = unique("derp"), unique("derc")
    create(server, parent, dependent_jobs=["ghost"])
    assert get_job(server, parent)["dependent_jobs"] is None
    create(server, child, parent_job=parent)
    save(server, job(parent, dependent_jobs=[]), "PUT", path_of(parent))
    assert get_job(server, parent)["dependent_jobs"] == [child]


def test_put_uses_the_body_name(server: Node) -> None:
    in_path, in_body = unique("path"), unique("body")
    response = server.request("PUT", path_of(in_path), json=job(in_body))
    assert response.status_code == 201  # Dkron's Location would be "<request path>/<name>"
    assert response.json()["name"] == in_body
    assert response.headers["Location"] == f"/v1/jobs/{in_body}"
    assert is_absent(server, in_path)
    assert get_job(server, in_body)["name"] == in_body


@pytest.mark.parametrize("value", ["", "true", "false", "0"])
def test_runoncreate_runs_the_job_after_saving(server: Node, value: str) -> None:
    name = unique("roc")
    response = server.post("/v1/jobs", params={"runoncreate": value}, json=job(name, command="echo created"))
    assert response.status_code == 201
    done = wait_for(lambda: finished(server, name, 1), 15, "the runoncreate execution")
    assert done[0]["output"] == "created\n"


def test_runoncreate_that_cannot_run_still_saves(server: Node) -> None:
    disabled, no_target = unique("rocdis"), unique("rocnotarget")
    response = server.post("/v1/jobs?runoncreate", json=job(disabled, disabled=True))
    assert response.status_code == 201
    assert get_job(server, disabled)["disabled"] is True
    response = server.post("/v1/jobs?runoncreate", json=job(no_target, tags={"role": "nobody-has-this"}))
    assert response.status_code == 201
    assert get_job(server, no_target)["name"] == no_target


def test_runoncreate_on_put(server: Node) -> None:
    name = unique("rocput")
    response = server.request("PUT", path_of(name) + "?runoncreate", json=job(name))
    assert response.status_code == 201
    wait_for(lambda: finished(server, name, 1), 15, "the runoncreate execution")


# ---------------------------------------------------------------------------------------------------------
# Jobs: run and toggle


@pytest.mark.parametrize("suffix", ["", "/run"])
def test_run_answers_200_with_the_job_and_executes(server: Node, suffix: str) -> None:
    name = unique("run")
    create(server, name)
    response = run(server, name, suffix)
    assert response.status_code == 200
    assert response.headers["Location"] == path_of(name) + suffix
    body = response.json()
    assert list(body) == JOB_KEYS
    assert body["name"] == name
    [execution] = wait_for(lambda: finished(server, name, 1), 15, "the execution")
    assert execution["success"] is True
    assert execution["output"] == "hello\n"
    assert execution["job_name"] == name
    assert execution["node_name"] == "n1"
    assert execution["attempt"] == 1
    assert isinstance(execution["group"], int)
    assert EXECUTION_ID.match(execution["id"])
    stored = get_job(server, name)
    assert stored["success_count"] == 1
    assert stored["status"] == "success"
    assert stored["last_success"] is not None


def test_failed_run_counts_as_an_error(server: Node) -> None:
    name = unique("fail")
    create(server, name, command="false")
    [execution] = run_and_wait(server, name)
    assert execution["success"] is False
    stored = get_job(server, name)
    assert (stored["success_count"], stored["error_count"], stored["status"]) == (0, 1, "failed")
    assert stored["last_error"] is not None
    assert stored["last_success"] is None


def test_run_unknown_job_is_404(server: Node) -> None:
    ghost = unique("ghost")
    assert run(server, ghost).status_code == 404
    assert run(server, ghost, "/run").status_code == 404


def test_run_disabled_job_is_404_until_toggled(server: Node) -> None:
    name = unique("dis")
    create(server, name, disabled=True)
    assert run(server, name).status_code == 404
    assert run(server, name, "/run").status_code == 404
    assert executions(server, name) == []

    toggled = server.post(path_of(name) + "/toggle")
    assert toggled.status_code == 200
    assert list(toggled.json()) == JOB_KEYS
    assert toggled.json()["disabled"] is False
    assert get_job(server, name)["disabled"] is False
    run_and_wait(server, name)

    toggled = server.post(path_of(name) + "/toggle")
    assert toggled.status_code == 200
    assert toggled.json()["disabled"] is True
    assert get_job(server, name)["disabled"] is True


def test_run_with_no_matching_node_is_404(server: Node) -> None:
    name = unique("notarget")
    create(server, name, tags={"role": "nobody-has-this"})
    response = run(server, name)
    assert response.status_code == 404
    assert "no target nodes found to run job" in response.text
    # dkron-nats (unlike Dkron) records the failed attempt in the history; see leader/launcher.py
    assert all(e["success"] is False for e in executions(server, name))


def test_unknown_executor_is_saved_and_fails_when_run(server: Node) -> None:
    name = unique("noexec")
    save(server, {"name": name, "schedule": "@manually", "executor": "no-such-executor"})
    [execution] = run_and_wait(server, name)
    assert execution["success"] is False
    assert "Specified executor is not present" in execution["output"]


def test_disabled_child_can_be_run_manually(server: Node) -> None:
    parent, child = unique("dcp"), unique("dcc")
    create(server, parent)
    create(server, child, parent_job=parent, disabled=True)
    run_and_wait(server, child)


def test_toggle_unknown_job_is_404(server: Node) -> None:
    assert server.post(path_of(unique("ghost")) + "/toggle").status_code == 404


# ---------------------------------------------------------------------------------------------------------
# Executions


@pytest.fixture(scope="module")
def history(server: Node) -> tuple[str, list[dict[str, Any]]]:
    """A job in Asia/Kolkata with two finished executions (oldest first)."""
    name = unique("hist")
    create(server, name, timezone="Asia/Kolkata")
    run_and_wait(server, name, 1)
    done = run_and_wait(server, name, 2)
    return name, sorted(done, key=lambda e: parse_time(e["started_at"]))


def _execution_list(server: Node, name: str, **params: Any) -> tuple[int, list[dict[str, Any]]]:
    response = server.get(path_of(name) + "/executions", params=params)
    assert response.status_code == 200, response.text
    return int(response.headers["X-Total-Count"]), response.json()


def test_executions_are_newest_first_with_a_total(
    server: Node, history: tuple[str, list[dict[str, Any]]]
) -> None:
    name, oldest_first = history
    total, items = _execution_list(server, name)
    assert total == 2
    assert [e["id"] for e in items] == [e["id"] for e in reversed(oldest_first)]
    for item in items:
        assert list(item)[:5] == ["id", "job_name", "started_at", "finished_at", "success"]
        assert item["output_truncated"] is False


def test_executions_sort_and_order(server: Node, history: tuple[str, list[dict[str, Any]]]) -> None:
    name, oldest_first = history
    ids = [e["id"] for e in oldest_first]
    assert [e["id"] for e in _execution_list(server, name, _sort="id", _order="ASC")[1]] == ids
    assert [e["id"] for e in _execution_list(server, name, _sort="id", _order="DESC")[1]] == ids[::-1]
    assert [e["id"] for e in _execution_list(server, name, _order="asc")[1]] == ids  # not "DESC": ascends
    assert [e["id"] for e in _execution_list(server, name, _sort="finished_at", _order="ASC")[1]] == ids
    assert len(_execution_list(server, name, _sort="attempt")[1]) == 2
    assert len(_execution_list(server, name, _start=0, _end=1)[1]) == 2  # paging is ignored


def test_executions_unknown_sort_is_an_empty_list(
    server: Node, history: tuple[str, list[dict[str, Any]]]
) -> None:
    name, _ = history
    total, items = _execution_list(server, name, _sort="bogus")
    assert (total, items) == (0, [])


def test_executions_output_size_limit_keeps_the_tail(
    server: Node, history: tuple[str, list[dict[str, Any]]]
) -> None:
    name, _ = history
    for item in _execution_list(server, name, output_size_limit=3)[1]:
        assert item["output"] == "lo\n"
        assert item["output_truncated"] is True
    for item in _execution_list(server, name, output_size_limit=200)[1]:
        assert item["output"] == "hello\n"
        assert item["output_truncated"] is False
    for item in _execution_list(server, name, output_size_limit=0)[1]:
        assert "output" not in item
        assert item["output_truncated"] is True


def test_executions_use_the_jobs_timezone(server: Node, history: tuple[str, list[dict[str, Any]]]) -> None:
    name, oldest_first = history
    for item in _execution_list(server, name)[1]:
        assert item["started_at"].endswith("+05:30"), item
        assert item["finished_at"].endswith("+05:30"), item
    single = server.get(f"{path_of(name)}/executions/{oldest_first[0]['id']}").json()
    assert single["started_at"].endswith("Z")
    assert parse_time(single["started_at"]) == parse_time(oldest_first[0]["started_at"])


def test_single_execution_has_the_full_output(
    server: Node, history: tuple[str, list[dict[str, Any]]]
) -> None:
    name, oldest_first = history
    response = server.get(f"{path_of(name)}/executions/{oldest_first[1]['id']}")
    assert response.status_code == 200
    execution = response.json()
    assert execution["id"] == oldest_first[1]["id"]
    assert execution["output"] == "hello\n"
    assert "output_truncated" not in execution
    assert server.get(f"{path_of(name)}/executions/123-n1").status_code == 404
    assert server.get(f"{path_of(unique('ghost'))}/executions/{execution['id']}").status_code == 404
    other = unique("other")
    create(server, other)
    assert server.get(f"{path_of(other)}/executions/{execution['id']}").status_code == 404


def test_executions_of_unknown_job_are_404(server: Node) -> None:
    ghost = unique("ghost")
    assert server.get(path_of(ghost) + "/executions").status_code == 404
    assert server.request("DELETE", path_of(ghost) + "/executions").status_code == 404  # Dkron: 500


def test_empty_execution_list_is_an_empty_array(server: Node) -> None:
    name = unique("never")
    create(server, name)
    assert _execution_list(server, name) == (0, [])


def test_delete_executions_resets_counters(server: Node) -> None:
    name = unique("purge")
    create(server, name)
    run_and_wait(server, name)
    assert get_job(server, name)["success_count"] == 1
    response = server.request("DELETE", path_of(name) + "/executions")
    assert response.status_code == 200
    body = response.json()
    assert list(body) == JOB_KEYS
    assert (body["success_count"], body["error_count"]) == (0, 0)
    assert body["last_success"] is None
    assert body["last_error"] is None
    stored = get_job(server, name)
    assert (stored["success_count"], stored["error_count"], stored["last_success"]) == (0, 0, None)
    assert _execution_list(server, name) == (0, [])


# ---------------------------------------------------------------------------------------------------------
# Restore


def _restore(server: Node, payload: bytes, field: str = "file") -> httpx.Response:
    return server.post("/v1/restore", files={field: ("jobs.json", payload, "application/json")})


def test_restore_creates_parents_first(server: Node) -> None:
    parent, child, existing = unique("rp"), unique("rc"), unique("rx")
    create(server, existing, displayname="before")
    jobs = [job(child, parent_job=parent), job(parent), job(existing, displayname="restored")]
    response = _restore(server, json.dumps(jobs).encode())
    assert response.status_code == 200, response.text
    encoded = response.json()
    assert isinstance(encoded, str)
    messages = json.loads(encoded)
    assert set(messages) == {f"success create {n}" for n in (parent, child, existing)}
    assert messages.index(f"success create {parent}") < messages.index(f"success create {child}")
    assert get_job(server, parent)["dependent_jobs"] == [child]
    assert get_job(server, child)["parent_job"] == parent
    assert get_job(server, existing)["displayname"] == "restored"


def test_restore_child_of_a_stored_parent(server: Node) -> None:
    parent, child = unique("rsp"), unique("rsc")
    create(server, parent)
    response = _restore(server, json.dumps([job(child, parent_job=parent)]).encode())
    assert response.status_code == 200
    assert get_job(server, parent)["dependent_jobs"] == [child]


def test_restore_empty_array(server: Node) -> None:
    response = _restore(server, b"[]")
    assert response.status_code == 200
    assert json.loads(response.json()) == []


def test_restore_without_file_is_404(server: Node) -> None:
    assert _restore(server, b"[]", field="other").status_code == 404
    assert server.post("/v1/restore").status_code == 404


def test_restore_bad_json_is_400(server: Node) -> None:
    assert_text(_restore(server, b"{not json"), 400, prefix="Unable to parse payload: ")
    assert_text(_restore(server, b'{"name": "x"}'), 400, prefix="Unable to parse payload: ")


def test_restore_rejects_the_whole_file_and_changes_nothing(server: Node) -> None:
    fine, child = unique("rok"), unique("rorphan")
    missing_parent = [job(fine), job(child, parent_job=unique("nowhere"))]
    assert _restore(server, json.dumps(missing_parent).encode()).status_code == 400
    invalid = [job(fine), job("Not Valid")]
    assert_text(_restore(server, json.dumps(invalid).encode()), 400, prefix="Job validation failed")
    assert is_absent(server, fine)
    assert is_absent(server, child)


# ---------------------------------------------------------------------------------------------------------
# The react-admin list protocol on GET /v1/jobs

CATALOG: dict[str, dict[str, Any]] = {
    # suffix: displayname, schedule, counters, times, disabled, status, metadata
    "a": {
        "displayname": "Zulu",
        "schedule": "@every 5h",
        "success_count": 3,
        "error_count": 0,
        "last_success": "2024-01-05T00:00:00Z",
        "status": "success",
        "metadata": {"team": "core", "env": "prod"},
    },
    "b": {
        "displayname": "Alpha",
        "schedule": "@every 2h",
        "success_count": 7,
        "error_count": 1,
        "last_error": "2024-02-01T00:00:00Z",
        "status": "failed",
        "metadata": {"team": "core", "env": "dev"},
    },
    "c": {
        "displayname": "Mike",
        "schedule": "@manually",
        "error_count": 4,
        "last_success": "2024-01-01T00:00:00Z",
        "last_error": "2024-03-01T00:00:00Z",
        "disabled": True,
    },
    "d": {
        "schedule": "@every 9h",
        "success_count": 1,
        "error_count": 2,
        "last_success": "2024-01-09T00:00:00Z",
        "status": "success",
        "metadata": {"team": "web"},
    },
    "e": {
        "displayname": "Echo",
        "schedule": "0 0 0 1 1 *",
        "success_count": 5,
        "disabled": True,
        "metadata": {"team": "core", "env": "prod"},
    },
    "f": {
        "displayname": "Bravo",
        "schedule": "@every 1h",
        "success_count": 2,
        "error_count": 6,
        "last_success": "2024-01-03T00:00:00Z",
        "last_error": "2024-01-15T00:00:00Z",
        "status": "failed",
    },
    "g": {
        "displayname": "Golf",
        "schedule": "@every 3h",
        "success_count": 9,
        "error_count": 3,
        "last_error": "2024-05-01T00:00:00Z",
        "metadata": {"env": "prod"},
    },
    "h": {
        "displayname": "Hotel",
        "schedule": "@daily",
        "success_count": 4,
        "error_count": 5,
        "last_success": "2024-01-07T00:00:00Z",
        "status": "success",
        "metadata": {"team": "core"},
    },
}
EXPECTED_ASC = {
    "name": "abcdefgh",
    "displayname": "dbfeghca",
    "schedule": "ehfbgadc",
    "success_count": "cdfahebg",
    "error_count": "aebdgchf",
    "last_success": "begcfahd",
    "last_error": "adehfbcg",
}


class Catalog:
    """Eight jobs sharing a unique name prefix; `list` and `order` answer with name suffixes."""

    def __init__(self, server: Node, uid: str) -> None:
        self.server = server
        self.uid = uid
        self.prefix = f"lst-{uid}-"

    def name(self, suffix: str) -> str:
        return self.prefix + suffix

    def list(self, **params: Any) -> tuple[int, list[str]]:
        params.setdefault("q", self.prefix)
        total, jobs = listing(self.server, **params)
        return total, [n.removeprefix(self.prefix) for n in names_of(jobs)]

    def order(self, **params: Any) -> str:
        return "".join(self.list(**params)[1])


@pytest.fixture(scope="module")
def catalog(server: Node) -> Catalog:
    cat = Catalog(server, uuid.uuid4().hex[:10])
    for suffix, fields in CATALOG.items():
        body = dict(fields)
        if body.get("displayname"):
            body["displayname"] = f"{body['displayname']} {cat.uid}"
        create(server, cat.name(suffix), **body)
    return cat


def test_list_total_counts_matches_before_slicing(catalog: Catalog) -> None:
    assert catalog.list() == (8, list("abcdefgh"))
    assert catalog.list(_start=2, _end=5) == (8, list("cde"))
    assert catalog.list(_start=6, _end=100) == (8, list("gh"))
    assert catalog.list(_start=8) == (8, [])
    assert catalog.list(_end=3) == (8, list("abc"))
    assert catalog.list(_start=5, _end=2) == (8, [])  # Dkron panics (500) here
    assert catalog.list(status="success", _start=1, _end=2) == (3, ["d"])


def test_list_every_response_has_a_total_header(server: Node) -> None:
    response = server.get("/v1/jobs")
    assert response.status_code == 200
    assert int(response.headers["X-Total-Count"]) == len(response.json())


@pytest.mark.parametrize("field", list(EXPECTED_ASC))
def test_list_sorts_by_field(catalog: Catalog, field: str) -> None:
    expected = EXPECTED_ASC[field]
    assert catalog.order(_sort=field) == expected
    assert catalog.order(_sort=field, _order="ASC") == expected
    assert catalog.order(_sort=field, _order="DESC") == expected[::-1]
    assert catalog.order(_sort=field, _order="desc") == expected  # only the exact "DESC" descends


def test_list_sort_by_id_is_by_name(catalog: Catalog) -> None:
    assert catalog.order() == "abcdefgh"
    assert catalog.order(_sort="id", _order="DESC") == "hgfedcba"
    assert catalog.order(_sort="success_count", _order="DESC", _start=0, _end=3) == "gbe"


def test_list_sort_by_next(catalog: Catalog) -> None:
    _, jobs = listing(catalog.server, q=catalog.prefix, _sort="next")
    keys = [(parse_time(j["next"]), j["name"]) for j in jobs]
    assert keys == sorted(keys)
    by_name = {j["name"].removeprefix(catalog.prefix): j["next"] for j in jobs}
    assert by_name["c"] == by_name["e"] == ZERO  # @manually and disabled: nothing scheduled
    assert catalog.order(_sort="next").index("f") < catalog.order(_sort="next").index("b")
    assert catalog.order(_sort="next", _order="DESC") == catalog.order(_sort="next")[::-1]


def test_list_sort_by_next_compares_instants_across_timezones(server: Node) -> None:
    prefix = unique("tznext")
    # local wall-clock text sorts the other way round: UTC-12 reads a day earlier than UTC+14
    create(server, f"{prefix}-a", schedule="0 0 * * * *", timezone="Etc/GMT+12")  # at most 1 h away
    create(server, f"{prefix}-b", schedule="0 * * * * *", timezone="Etc/GMT-14")  # at most 1 min away
    _, jobs = listing(server, q=prefix, _sort="next")
    assert names_of(jobs) == [f"{prefix}-b", f"{prefix}-a"] or jobs[0]["next"] == jobs[1]["next"]
    keys = [(parse_time(j["next"]), j["name"]) for j in jobs]
    assert keys == sorted(keys)


def test_list_string_sorts_ignore_case_like_buntdb(server: Node) -> None:
    prefix = unique("case")
    for suffix, displayname in (("a", "beta"), ("b", "Alpha"), ("c", "Gamma"), ("d", "delta")):
        create(server, f"{prefix}-{suffix}", displayname=displayname)
    _, jobs = listing(server, q=prefix, _sort="displayname")
    assert [j["displayname"] for j in jobs] == ["Alpha", "beta", "delta", "Gamma"]


def test_list_invalid_sort_is_400_naming_the_fields(catalog: Catalog) -> None:
    # Dkron answers 500 with an empty body
    response = catalog.server.get("/v1/jobs", params={"_sort": "owner"})
    assert_text(response, 400)
    assert "owner" in response.text
    for field in SORTABLE:
        assert field in response.text


def test_list_q_is_a_case_sensitive_match_on_name_or_displayname(catalog: Catalog) -> None:
    assert catalog.list(q=catalog.name("c")) == (1, ["c"])
    assert catalog.list(q=f"Alpha {catalog.uid}") == (1, ["b"])
    assert catalog.list(q=f"alpha {catalog.uid}") == (0, [])
    assert catalog.list(q=catalog.prefix.upper()) == (0, [])
    assert catalog.list(q=catalog.uid)[0] == 8


def test_list_status_filter(catalog: Catalog) -> None:
    assert catalog.list(status="success") == (3, list("adh"))
    assert catalog.list(status="failed") == (2, list("bf"))
    assert catalog.list(status="untriggered") == (3, list("ceg"))
    assert catalog.list(status="partially_failed") == (0, [])


def test_list_disabled_filter(catalog: Catalog) -> None:
    assert catalog.list(disabled="true") == (2, list("ce"))
    assert catalog.list(disabled="false") == (6, list("abdfgh"))
    assert catalog.list(disabled="TRUE") == (0, [])  # compared with Go's "true"/"false"


def test_list_empty_filters_filter_nothing(catalog: Catalog) -> None:
    assert catalog.list(status="", disabled="") == (8, list("abcdefgh"))


def test_list_metadata_filter(catalog: Catalog) -> None:
    assert catalog.list(**{"metadata[team]": "core"}) == (4, list("abeh"))
    assert catalog.list(**{"metadata[team]": "core", "metadata[env]": "prod"}) == (2, list("ae"))
    assert catalog.list(**{"metadata[env]": "prod"}) == (3, list("aeg"))
    assert catalog.list(**{"metadata[team]": "nobody"}) == (0, [])
    assert catalog.list(**{"metadata[team]": "core", "disabled": "false", "_sort": "displayname"}) == (
        3,
        list("bha"),
    )


def test_list_filters_combine(catalog: Catalog) -> None:
    assert catalog.list(status="success", disabled="false", _sort="success_count", _order="DESC") == (
        3,
        list("had"),
    )
