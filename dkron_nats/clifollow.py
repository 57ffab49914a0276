"""Following executions live from the CLI: `executions output --follow` and `jobs run --follow`.

Both read an execution's live output stream (`GET .../executions/{id}/output` with `Accept:
text/event-stream`): `output` events as the job prints, then one `end` event with the finished record.
`jobs run --follow` follows every execution of the launch, and each failed attempt's retry, to the last one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from typing import Any

import click

from dkron_nats.apiclient import NOT_FOUND, Api, ApiError
from dkron_nats.jobsync import job_path
from dkron_nats.output_formats import YAML, is_structured, print_structured
from dkron_nats.timefmt import ZERO_TIME

RETRY_POLL = 0.5
"""Seconds between looks for a retry's record while the retry's delay runs."""


def no_execution(job: str, execution_id: str) -> str:
    return f"no execution {execution_id!r} of job {job!r} (dkron-nats executions list {job} shows them)"


def follow_output(api: Api, job: str, execution_id: str, output: str) -> dict[str, Any]:
    """Print an execution's output as it comes (structured: one event per line or YAML document);
    the finished execution."""
    path = job_path(job, "executions", execution_id, "output")
    final: dict[str, Any] = {}
    with api.stream(path, "text/event-stream", no_execution(job, execution_id)) as response:
        for kind, data in sse_events(response.iter_lines()):
            if is_structured(output):
                event = {"event": kind, "output": data.get("output", "")} if kind == "output" else {}
                _print_event(event or {"event": kind, "execution": data}, output)
            elif kind == "output":
                click.echo(data.get("output", ""), nl=False)
            if kind == "end":
                final = data
            elif kind == "error":
                raise ApiError(f"the output stream of {execution_id} broke off: {data.get('error', data)}")
    if _running(final):  # the stream ends a moment before the leader stores the result
        final = _finished_record(api, job, execution_id)
    return final


def _print_event(event: Mapping[str, Any], output: str) -> None:
    if output == YAML:
        click.echo("---")
    print_structured(event, output)


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event, JSON data) pairs of a Server-Sent Events stream."""
    kind, data = "message", list[str]()
    for line in lines:
        if not line:
            if data:
                yield kind, json.loads("\n".join(data))
            kind, data = "message", []
        elif line.startswith("event:"):
            kind = line.partition(":")[2].strip()
        elif line.startswith("data:"):
            data.append(line.partition(":")[2].removeprefix(" "))


def _running(execution: Mapping[str, Any]) -> bool:
    return execution.get("finished_at") in (None, ZERO_TIME)


def _finished_record(api: Api, job: str, execution_id: str) -> dict[str, Any]:
    path = job_path(job, "executions", execution_id)
    while True:
        found: dict[str, Any] = api.call("GET", path, missing=no_execution(job, execution_id))
        if not _running(found):
            return found
        time.sleep(RETRY_POLL)


def follow_launch(api: Api, job: Mapping[str, Any], execution_ids: list[str], output: str) -> bool:
    """Follow each execution of a launch, one after the other (each from its first byte), through its
    retries; whether every node's last attempt succeeded."""
    succeeded = True
    for execution_id in execution_ids:
        attempt = execution_id
        while True:
            if not is_structured(output) and (len(execution_ids) > 1 or attempt != execution_id):
                click.echo(f"--- execution {attempt}", err=True)
            final = follow_output(api, job["name"], attempt, output)
            if not is_structured(output):
                _say_ended(final, attempt)
            retry = _retry_of(job, final, attempt)
            if retry is None:
                succeeded = succeeded and bool(final.get("success"))
                break
            attempt = _await_retry(api, job["name"], retry)
    return succeeded


def _say_ended(final: Mapping[str, Any], execution_id: str) -> None:
    outcome = "succeeded" if final.get("success") else "failed"
    node = f" on {final['node_name']}" if final.get("node_name") else ""
    click.echo(f"execution {execution_id}{node} {outcome}", err=True)


def _retry_of(job: Mapping[str, Any], final: Mapping[str, Any], execution_id: str) -> str | None:
    """The id of the retry a failed attempt gets (the leader's rule: attempt <= retries), or None."""
    attempt = int(final.get("attempt") or 1)
    if final.get("success") or attempt > int(job.get("retries") or 0) or execution_id.endswith("-none"):
        return None
    return f"{execution_id.split('=')[0]}={attempt + 1}"


def _await_retry(api: Api, job: str, retry: str) -> str:
    """Wait for the retry's record (its backoff may be minutes); stop if the job is deleted meanwhile."""
    click.echo(f"waiting for the retry {retry}", err=True)
    path = job_path(job, "executions", retry)
    while True:
        try:
            api.call("GET", path, missing=no_execution(job, retry))
            return retry
        except ApiError as error:
            if error.exit_code != NOT_FOUND:
                raise
        api.call("GET", job_path(job), missing=f"job {job!r} was deleted while its retry waited")
        time.sleep(RETRY_POLL)
