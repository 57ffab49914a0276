"""Property-based fuzzing of the whole API, driven by its own OpenAPI document (`GET /openapi.json`).

schemathesis turns each operation of the document into hypothesis strategies, for data that fits the
document and data that breaks it; every case is sent to a real server with a per-request timeout, and the
run records what it finds:

* `server error`: a 5xx (a 503 counts only when it is not the documented pause or no-leader answer);
* `hang`: no answer within the timeout;
* `nonconforming`: a status, content type, header or body the document does not describe;
* `stored garbage`: afterwards, a stored job that no longer passes validation or whose pages fail;
* `not scheduling`: afterwards, a new `@every 1s` job does not run.

`POST /v1/leave` is left out: it stops the node under test, by design. Path operations are also tried on
a few seeded jobs (and one of their executions), so they reach more than 404s.

Long run: `python -m bench.fuzz --examples 500` (prints the findings, exits 1 if there are any).
The short run is `tests/integration/test_fuzz.py`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from dkron_nats.agent.registry import discover_executors, discover_processors
from dkron_nats.errors import DkronError
from dkron_nats.jobinput import decode_job, validate_job
from tests.harness import Node, finished, job, running, wait_for

LEFT_OUT = {("POST", "/v1/leave")}
"""Operations not fuzzed: leave stops the node under test."""
PAUSE_PATHS = ("/v1/pause", "/v1/unpause")
"""Fuzzed last: a pause refuses every later submission."""
SEED_JOBS = ("fuzz-seed-a", "fuzz-seed-b")
KNOWN_503 = ("New job submissions are currently paused", "no leader")
CONFORMANCE = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
MAX_FINDINGS_PER_OPERATION = 3


@dataclass(frozen=True)
class Finding:
    kind: str
    operation: str
    detail: str
    reproduce: str = ""

    def __str__(self) -> str:
        text = f"[{self.kind}] {self.operation}: {self.detail}"
        return f"{text}\n    reproduce: {self.reproduce}" if self.reproduce else text


@dataclass
class FuzzReport:
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    findings: list[Finding] = field(default_factory=list)
    operations: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        statuses = ", ".join(f"{status}: {n}" for status, n in sorted(self.statuses.items()))
        lines = [
            f"{self.requests} requests to {len(self.operations)} operations in {self.seconds:.0f} s",
            f"statuses: {statuses}",
            f"findings: {len(self.findings)}",
            *(str(finding) for finding in self.findings),
        ]
        return "\n".join(lines)


@dataclass
class _Target:
    node: Node
    timeout: float
    report: FuzzReport
    execution: str
    """An execution id of the first seeded job."""


# --------------------------------------------------------------------------- one operation


def _check_case(target: _Target, case: Case[Any], label: str) -> Finding | None:
    """Send one case; what is wrong with the answer, if anything."""
    try:
        response = case.call(base_url=target.node.url, timeout=target.timeout)
    except requests.Timeout:
        return Finding("hang", label, f"no answer within {target.timeout} s", case.as_curl_command())
    target.report.requests += 1
    target.report.statuses[response.status_code] += 1
    status, body = response.status_code, response.text
    if status >= 500 and not (status == 503 and body.startswith(KNOWN_503)):
        return Finding("server error", label, f"{status}: {body[:300]}", case.as_curl_command())
    try:
        case.validate_response(response, checks=CONFORMANCE)
    except FailureGroup as group:
        failures: Sequence[Failure] = group.exceptions
    except Failure as failure:
        failures = [failure]
    else:
        return None
    return Finding("nonconforming", label, f"{status}: {_describe(failures)}", case.as_curl_command())


def _describe(failures: Sequence[Failure]) -> str:
    """What the checks said, on one line: `title (message)` for each."""
    return "; ".join(f"{f.title} ({' '.join(f.message.split())[:200]})" for f in failures)


def _strategy(operation: Any, target: _Target) -> st.SearchStrategy[Case[Any]]:
    """Cases that fit the document and cases that break it; path operations also on the seeded jobs, and
    job bodies that pass validation often enough to be stored (random schedules rarely parse)."""
    modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    choices = [operation.as_strategy(generation_mode=mode) for mode in modes]
    names = {parameter.name for parameter in operation.path_parameters}
    fixed = {"job": SEED_JOBS[0]} | ({"execution": target.execution} if "execution" in names else {})
    if "job" in names:
        choices += [operation.as_strategy(generation_mode=mode, path_parameters=fixed) for mode in modes]
    key = (operation.method.upper(), operation.path)
    if key in JOB_SAVES:
        choices.append(_likely_valid_jobs().flatmap(lambda body: operation.as_strategy(body=body)))
    if key == ("POST", "/v1/restore"):
        files = st.lists(_likely_valid_jobs(), max_size=3).map(lambda jobs: {"file": json.dumps(jobs)})
        choices.append(files.flatmap(lambda body: operation.as_strategy(body=body)))
    return st.one_of(*choices)


JOB_SAVES = {("POST", "/v1/jobs"), ("PATCH", "/v1/jobs"), ("PUT", "/v1/jobs/{job}")}
_ANY_TEXT = st.text(max_size=40)


def _likely_valid_jobs() -> st.SearchStrategy[dict[str, Any]]:
    """Jobs with valid names and schedules and random text elsewhere. They only ever run `true` (with
    `runoncreate`), and no `files` processor: its `log_dir` would be created wherever the text says."""
    token = st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True)
    shell_config = st.dictionaries(_ANY_TEXT, _ANY_TEXT, max_size=3).map(
        lambda extra: {**extra, "command": "true"}
    )
    return st.fixed_dictionaries(
        {
            "name": st.from_regex(r"[a-z0-9_-]{1,30}", fullmatch=True),
            "schedule": st.sampled_from(["@manually", "@every 1h", "0 0 3 * * *", "@daily", "@yearly"]),
        },
        optional={
            "executor": st.just("shell"),
            "executor_config": shell_config,
            "timezone": st.sampled_from(["", "UTC", "Local", "Europe/Paris", "Asia/Kolkata"]),
            "tags": st.dictionaries(token, token, max_size=3),
            "metadata": st.dictionaries(_ANY_TEXT, _ANY_TEXT, max_size=3),
            "processors": st.just({"log": {"forward": "true"}}),
            "disabled": st.booleans(),
            "retries": st.integers(0, 3),
            "concurrency": st.sampled_from(["allow", "forbid", "replace", ""]),
            "displayname": _ANY_TEXT,
            "owner": _ANY_TEXT,
            "parent_job": st.sampled_from(["", *SEED_JOBS]),
            "depends_on": st.lists(st.fixed_dictionaries({"job": st.sampled_from(SEED_JOBS)}), max_size=1),
            "starting_deadline": st.sampled_from(["", "1m", "2h"]),
            "history_limit": st.integers(0, 1000),
            "notify_on": st.sampled_from(["always", "failure", "recovery"]),
        },
    )


def _fuzz_operation(operation: Any, target: _Target, examples: int, derandomize: bool) -> None:
    label = f"{operation.method.upper()} {operation.path}"
    found: list[Finding] = []

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=derandomize,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=_strategy(operation, target))
    def run(case: Case[Any]) -> None:
        if len(found) >= MAX_FINDINGS_PER_OPERATION:
            return
        finding = _check_case(target, case, label)
        if finding is not None:
            found.append(finding)

    run()
    target.report.operations.append(label)
    target.report.findings += found


# --------------------------------------------------------------------------- before and after


def _unpause(node: Node) -> None:
    for scheduling in ("false", "true"):
        node.post("/v1/unpause", params={"scheduling": scheduling}).raise_for_status()


def _seed(node: Node) -> str:
    """(Re)create the seeded jobs (unpausing first); an execution id of the first one."""
    _unpause(node)
    for name in SEED_JOBS:
        response = node.post("/v1/jobs", json=job(name, metadata={"seed": "true"}))
        response.raise_for_status()
    listed = node.get(f"/v1/jobs/{SEED_JOBS[0]}/executions").json()
    if listed:
        return str(listed[0]["id"])
    node.post(f"/v1/jobs/{SEED_JOBS[0]}/run").raise_for_status()
    [execution] = wait_for(lambda: finished(node, SEED_JOBS[0], 1), timeout=20, what="the seeded run")
    return str(execution["id"])


def _stored_garbage(node: Node) -> list[Finding]:
    """Every stored job must still pass the same validation as a new one, and its pages must answer."""
    executors, processors = discover_executors(), discover_processors()
    findings = []
    for stored in node.get("/v1/jobs").json():
        name = stored["name"]
        try:
            validate_job(decode_job(json.dumps(stored).encode()), executors.validate, processors.validate)
        except DkronError as exc:
            findings.append(Finding("stored garbage", f"job {name!r}", str(exc)))
        for page in ("", "/executions"):
            response = node.request("GET", f"/v1/jobs/{quote(name, safe='')}{page}")
            if response.status_code != 200:
                detail = f"GET {page or '/'} answers {response.status_code}: {response.text[:200]}"
                findings.append(Finding("stored garbage", f"job {name!r}", detail))
    return findings


def _still_schedules(node: Node) -> list[Finding]:
    _unpause(node)
    name = "fuzz-after-check"
    response = node.post("/v1/jobs", json=job(name, "@every 1s"))
    if response.status_code != 201:
        return [Finding("not scheduling", "POST /v1/jobs", f"{response.status_code}: {response.text[:200]}")]
    try:
        wait_for(lambda: finished(node, name, 2), timeout=20, what="two scheduled runs after fuzzing")
    except AssertionError as exc:
        return [Finding("not scheduling", f"job {name}", str(exc))]
    finally:
        node.request("DELETE", f"/v1/jobs/{name}")
    return []


def _operations(node: Node) -> list[Any]:
    schema = schemathesis.openapi.from_dict(node.get("/openapi.json").json())
    operations = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise AssertionError(
                f"the OpenAPI document has an operation that cannot be loaded: {result.err()}"
            )
        operations.append(result.ok())
    kept = [op for op in operations if (op.method.upper(), op.path) not in LEFT_OUT]
    return sorted(kept, key=lambda op: op.path in PAUSE_PATHS)


def fuzz(
    node: Node,
    examples: int,
    timeout: float = 5.0,
    derandomize: bool = False,
    progress: Callable[[str], None] = lambda _: None,
) -> FuzzReport:
    """Fuzz every operation of a running (leading) node, then check what it stored and that it schedules."""
    started = time.monotonic()
    report = FuzzReport()
    for operation in _operations(node):
        target = _Target(node, timeout, report, _seed(node))
        progress(f"{operation.method.upper()} {operation.path}")
        _fuzz_operation(operation, target, examples, derandomize)
    report.findings += _stored_garbage(node)
    report.findings += _still_schedules(node)
    report.seconds = time.monotonic() - started
    return report


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=200, help="cases per operation")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds one request may take")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, running(Node(Path(tmp) / "fuzz")) as node:
        report = fuzz(node, args.examples, args.timeout, progress=lambda what: print(f"fuzzing {what}"))
    print(report.summary())
    return 1 if report.findings else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
