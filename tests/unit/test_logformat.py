"""`--log-format json`: one JSON object per line, with the record's fields, and no secret in any of them."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from dkron_nats import logsetup
from dkron_nats.logformat import about


@pytest.fixture
def node_log() -> Iterator[io.StringIO]:
    """The node's log handler (as `dkron-nats agent` sets it up) writing here; the root logger is restored."""
    root, nats = logging.getLogger(), logging.getLogger("nats")
    levels, stream = (root.level, nats.level), io.StringIO()
    handler = logsetup.configure("info", "json", "web-1", stream=stream)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(levels[0])
        nats.setLevel(levels[1])


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_each_record_is_one_json_object_with_its_fields_and_secrets_masked(node_log: io.StringIO) -> None:
    log = logging.getLogger("dkron_nats.agent.runner")
    log.info("job %s started", "backup", extra={"job": "backup", "execution": "1700000000000000000-web-1"})
    log.debug("not shown at info")
    try:
        raise RuntimeError("connect to https://admin:hunter2@db.internal/x failed\nsecond line")
    except RuntimeError:
        log.exception("posting to https://ops:s3cret@hooks.example.com/h?token=abc failed")
    first, second = _lines(node_log)
    assert set(first) == {"time", "level", "logger", "message", "node", "job", "execution"}
    assert first["level"] == "info"
    assert first["logger"] == "dkron_nats.agent.runner"
    assert first["message"] == "job backup started"
    assert (first["node"], first["job"], first["execution"]) == (
        "web-1",
        "backup",
        "1700000000000000000-web-1",
    )
    assert str(first["time"]).endswith("Z")
    assert second["level"] == "error"
    assert "hooks.example.com" in str(second["message"])
    assert "RuntimeError" in str(second["exception"])
    text = node_log.getvalue()
    for secret in ("s3cret", "hunter2", "token=abc"):
        assert secret not in text


def test_records_inside_about_carry_the_job_and_execution(node_log: io.StringIO) -> None:
    log = logging.getLogger("dkron_nats.leader.results")
    with about(job="nightly-payroll", execution="1700000000000000000-web-2"):
        log.warning("retrying")
        with about(execution="1700000000000000001-web-2"):
            log.info("retry sent")
    log.info("idle")
    inside, nested, outside = _lines(node_log)
    assert (inside["job"], inside["execution"]) == ("nightly-payroll", "1700000000000000000-web-2")
    assert (nested["job"], nested["execution"]) == ("nightly-payroll", "1700000000000000001-web-2")
    assert "job" not in outside
    assert "execution" not in outside


def test_a_reload_switches_format_and_level(node_log: io.StringIO) -> None:
    logsetup.apply("debug", "text", "web-1")
    logging.getLogger("dkron_nats.node").debug("now in text")
    assert node_log.getvalue().rstrip().endswith("DEBUG dkron_nats.node: now in text")
