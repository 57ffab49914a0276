"""Hostile input against a real server: each is refused with a 4xx naming what was wrong (or shown to be
harmless), nothing is stored, and the server goes on answering.

Names reach NATS subjects and KV keys, so NATS wildcards (`*`, `>`), `$`-subjects and dots are tried in
every place a name can be given. Paths reach the file system and headers reach the wire, so `..` and CR/LF
are tried there. The node is shared by every test (the session fixture `server`), each with its own names.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.harness import Node, finished, job, wait_for

HOSTILE_NAMES = ["a.b", "*", ">", "$SYS", "$KV.dkron-jobs.x", "a b", "a\r\nb"]
"""Wildcards, system and KV subjects, a dot (an extra subject token), a space, a line break."""


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def save(server: Node, body: dict[str, Any] | bytes, **kw: Any) -> httpx.Response:
    if isinstance(body, bytes):
        return server.post("/v1/jobs", content=body, **kw)
    return server.post("/v1/jobs", json=body, **kw)


def stored_names(server: Node) -> set[str]:
    response = server.get("/v1/jobs")
    assert response.status_code == 200
    return {j["name"] for j in response.json()}


def assert_refused(response: httpx.Response, status: int, *naming: str) -> None:
    assert response.status_code == status, response.text
    for word in naming:
        assert word in response.text, f"{word!r} not named in {response.text!r}"


@pytest.fixture
def victim(server: Node) -> Any:
    """A stored job that wildcards in other names must never reach."""
    name = unique("victim")
    assert save(server, job(name)).status_code == 201
    try:
        yield name
    finally:
        server.request("DELETE", f"/v1/jobs/{name}")


# --------------------------------------------------------------------------- bodies


def test_an_oversized_body_is_refused_with_413_and_nothing_is_stored(server: Node) -> None:
    name = unique("huge")
    body = job(name, metadata={"filler": "x" * 2_000_000})  # over the default --max-body-size of 1 MiB
    assert_refused(save(server, body), 413, "--max-body-size")
    assert server.get(f"/v1/jobs/{name}").status_code == 404
    files = {"file": ("jobs.json", json.dumps([body]).encode(), "application/json")}
    assert server.post("/v1/restore", files=files).status_code == 413
    assert server.get(f"/v1/jobs/{name}").status_code == 404


@pytest.mark.parametrize("where", ["a known field", "an unknown field", "the top level"])
def test_deeply_nested_json_is_refused_with_400(server: Node, where: str) -> None:
    name = unique("deep")
    deep = "[" * 100_000 + "]" * 100_000
    body = {
        "a known field": f'{{"name": "{name}", "metadata": {deep}}}',
        "an unknown field": f'{{"name": "{name}", "unknown": {deep}}}',
        "the top level": deep,
    }[where]
    assert_refused(save(server, body.encode()), 400, "Unable to parse payload")
    assert server.get(f"/v1/jobs/{name}").status_code == 404
    assert server.get("/health").status_code == 200


@pytest.mark.parametrize(
    "raw", [b'{"name": "\xff\xfe"}', b'{"name": "ok", "owner": "\xc3\x28"}', b"\xfe\xff\x00{"]
)
def test_a_body_that_is_not_utf8_is_refused_with_400(server: Node, raw: bytes) -> None:
    before = stored_names(server)
    assert_refused(save(server, raw), 400, "Unable to parse payload")
    files = {"file": ("jobs.json", b"[" + raw + b"]", "application/json")}
    assert_refused(server.post("/v1/restore", files=files), 400)
    assert stored_names(server) == before


# --------------------------------------------------------------------------- names in subjects and keys


@pytest.mark.parametrize("name", [*HOSTILE_NAMES, "UPPER"])
def test_a_job_name_that_could_form_a_subject_is_refused(server: Node, name: str) -> None:
    before = stored_names(server)
    assert_refused(save(server, job(name)), 400, "name")
    assert_refused(server.request("PUT", f"/v1/jobs/{quote(name, safe='')}", json=job(name)), 400, "name")
    assert stored_names(server) == before


@pytest.mark.parametrize(
    "tags",
    [{bad: "x"} for bad in HOSTILE_NAMES] + [{"role": bad} for bad in HOSTILE_NAMES] + [{"role": "a:*"}],
)
def test_tag_keys_and_values_that_could_form_a_subject_are_refused(
    server: Node, tags: dict[str, str]
) -> None:
    name = unique("tags")
    assert_refused(save(server, job(name, tags=tags)), 400, "tag")
    assert server.get(f"/v1/jobs/{name}").status_code == 404


@pytest.mark.parametrize("executor", HOSTILE_NAMES)
def test_an_executor_name_that_is_not_a_plugin_name_is_refused(server: Node, executor: str) -> None:
    name = unique("executor")
    body = {**job(name), "executor": executor}
    assert_refused(save(server, body), 400, "executor")
    assert server.get(f"/v1/jobs/{name}").status_code == 404


@pytest.mark.parametrize("processor", HOSTILE_NAMES)
def test_a_processor_name_that_is_not_a_plugin_name_is_refused(server: Node, processor: str) -> None:
    name = unique("processor")
    assert_refused(save(server, job(name, processors={processor: {}})), 400, "processor")
    assert server.get(f"/v1/jobs/{name}").status_code == 404


@pytest.mark.parametrize("parent", HOSTILE_NAMES)
def test_a_parent_or_dependency_name_never_matches_another_job(
    server: Node, victim: str, parent: str
) -> None:
    """Names of other jobs are looked up by their exact key: a wildcard finds nothing (Dkron's 404 for a
    parent, 400 naming depends_on for a dependency) even while a job exists that it would match."""
    name = unique("child")
    assert_refused(save(server, job(name, parent_job=parent)), 404, "parent job not found")
    body = job(name, depends_on=[{"job": parent, "on": "success"}])
    assert_refused(save(server, body), 400, "depends_on")
    assert server.get(f"/v1/jobs/{name}").status_code == 404
    assert server.get(f"/v1/jobs/{victim}").json()["dependent_jobs"] is None


def test_metadata_never_becomes_a_subject_so_any_text_is_kept_as_it_is(server: Node) -> None:
    """Metadata is labels only (stored in the job's value, filtered in memory): hostile text is harmless,
    but a line break (or other control character) could forge a line where it is shown, so it is refused."""
    name = unique("metadata")
    metadata = {bad: bad for bad in HOSTILE_NAMES if "\n" not in bad}
    assert_refused(save(server, job(name, metadata={"a\r\nb": "x"})), 400, "metadata", "control character")
    assert save(server, job(name, metadata=metadata)).status_code == 201
    try:
        assert server.get(f"/v1/jobs/{name}").json()["metadata"] == metadata
        listed = server.get("/v1/jobs", params={"metadata[*]": "*"}).json()
        assert [j["name"] for j in listed] == [name]
    finally:
        server.request("DELETE", f"/v1/jobs/{name}")


@pytest.mark.parametrize("name", HOSTILE_NAMES)
@pytest.mark.parametrize(
    ("method", "template"),
    [
        ("GET", "/v1/jobs/{}"),
        ("DELETE", "/v1/jobs/{}"),
        ("POST", "/v1/jobs/{}"),
        ("POST", "/v1/jobs/{}/run"),
        ("POST", "/v1/jobs/{}/toggle"),
        ("GET", "/v1/jobs/{}/executions"),
        ("DELETE", "/v1/jobs/{}/executions"),
        ("GET", "/v1/jobs/{}/next"),
    ],
)
def test_a_hostile_job_name_in_the_path_finds_no_job(
    server: Node, victim: str, name: str, method: str, template: str
) -> None:
    response = server.request(method, template.format(quote(name, safe="")))
    assert response.status_code == 404, response.text
    assert server.get(f"/v1/jobs/{victim}").json()["disabled"] is False


BAD_KEY_IDS = ["$SYS", "a b", "a\r\nb", "é"]
"""Not valid KV key characters: they must never reach the KV client."""


@pytest.mark.parametrize(
    "execution",
    [
        *(name for name in HOSTILE_NAMES if name not in BAD_KEY_IDS),
        "../../../etc/passwd",
        "1-n1=1.x",
        "1-n1/../../x",
        *BAD_KEY_IDS,
    ],
)
@pytest.mark.parametrize("suffix", ["", "/output", "/cancel"])
def test_a_hostile_execution_id_in_the_path_finds_nothing(
    server: Node, victim: str, execution: str, suffix: str
) -> None:
    method = "POST" if suffix == "/cancel" else "GET"
    response = server.request(method, f"/v1/jobs/{victim}/executions/{quote(execution, safe='')}{suffix}")
    assert response.status_code == 404, response.text
    assert "root:" not in response.text


# --------------------------------------------------------------------------- paths on the agent


@pytest.mark.parametrize("cwd", ["/tmp/../etc", "..", "../../root", "/tmp/x/..", "/tmp\x00/x"])
def test_a_cwd_that_climbs_out_or_hides_a_nul_is_refused(server: Node, cwd: str) -> None:
    name = unique("cwd")
    body = job(name, executor_config={"command": "true", "cwd": cwd})
    assert_refused(save(server, body), 400, "executor_config.cwd")
    assert server.get(f"/v1/jobs/{name}").status_code == 404


@pytest.mark.parametrize("log_dir", ["/tmp/../etc", "../x", "/var/log/dkron/../../../etc", "/tmp/\x00"])
def test_a_log_dir_that_climbs_out_or_hides_a_nul_is_refused(server: Node, log_dir: str) -> None:
    name = unique("logdir")
    body = job(name, processors={"files": {"log_dir": log_dir}})
    assert_refused(save(server, body), 400, "processors.files.log_dir")
    assert server.get(f"/v1/jobs/{name}").status_code == 404


def test_output_files_are_named_by_the_server_made_execution_id_only(server: Node, tmp_path: Path) -> None:
    """The files processor writes `<log_dir>/<execution id>.log`; the id is `<ns>-<node>`, made by the server
    from a validated node name, so it cannot point outside `log_dir`."""
    name = unique("files")
    body = job(name, command="echo kept", processors={"files": {"log_dir": name}})
    assert save(server, body).status_code == 201
    try:
        assert server.post(f"/v1/jobs/{name}/run").status_code == 200
        [execution] = wait_for(lambda: finished(server, name, 1), timeout=20, what=f"{name} to finish")
    finally:
        server.request("DELETE", f"/v1/jobs/{name}")
    assert re.fullmatch(r"[0-9]+-[A-Za-z0-9_-]+(=[0-9]+)?", execution["id"])
    log_dir = server.data_dir / "processor-files" / name  # under the files root: <data-dir>/processor-files
    assert [p.name for p in log_dir.iterdir()] == [f"{execution['id']}.log"]


# --------------------------------------------------------------------------- the http executor's request


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"headers": json.dumps(["X-A: b\r\nX-Injected: 1"])}, "headers"),
        ({"headers": json.dumps(["X-A: b\nX-Injected: 1"])}, "headers"),
        ({"headers": json.dumps(["X-A\r\nX-Injected: 1"])}, "headers"),
        ({"headers": json.dumps(["X-A: b\x00"])}, "headers"),
        ({"url": "http://127.0.0.1/x\r\nX-Injected: 1"}, "url"),
        ({"url": "http://127.0.0.1/x HTTP/1.1\r\nHost: evil"}, "url"),
        ({"url": "http://evil\r\n.example/"}, "url"),
        ({"method": "GET /x HTTP/1.1\r\nX-Injected: 1\r\n"}, "method"),
        ({"method": "GET\r\nX-Injected: 1"}, "method"),
        ({"method": "GET /"}, "method"),
    ],
)
def test_line_breaks_in_the_http_executors_request_are_refused(
    server: Node, config: dict[str, str], field: str
) -> None:
    name = unique("http")
    executor_config = {"method": "GET", "url": "http://127.0.0.1:9/", **config}
    body = {**job(name), "executor": "http", "executor_config": executor_config}
    assert_refused(save(server, body), 400, "http:", field)
    assert server.get(f"/v1/jobs/{name}").status_code == 404


def test_a_job_name_in_another_script_is_kept_and_its_run_answers(server: Node) -> None:
    """Dkron allows any lower-case letters: the name reaches headers (Location) and KV keys (hex-encoded)."""
    name = "задача-" + uuid.uuid4().hex[:6]
    created = save(server, job(name))
    assert created.status_code == 201, created.text
    try:
        path = f"/v1/jobs/{quote(name, safe='')}"
        assert server.get(path).json()["name"] == name
        ran = server.post(f"{path}/run")
        assert ran.status_code == 200, ran.text
        assert server.post(f"{path}/toggle").json()["disabled"] is True
    finally:
        server.request("DELETE", f"/v1/jobs/{quote(name, safe='')}")
    assert server.get(f"/v1/jobs/{quote(name, safe='')}").status_code == 404
