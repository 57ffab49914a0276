"""The rules that keep secrets out of events, notifications, read-only views, outputs and logs.

The notification tests run the real notifier against a real HTTP receiver (tests/httpserver.py).
"""

from __future__ import annotations

import io
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

import anyio
import anyio.to_thread
import msgspec
import pytest

from dkron_nats.agent.executor import OutputBuffer
from dkron_nats.agent.runner import Running
from dkron_nats.events import job_event
from dkron_nats.leader.notify import Notifier, NotifySettings, Webhook
from dkron_nats.logredact import RedactingFilter, install
from dkron_nats.models import Execution, JobSpec, Parameter
from dkron_nats.secrets import (
    MASK,
    StreamRedactor,
    is_secret_key,
    job_secrets,
    mask_job_json,
    mask_text,
    masked,
    node_secrets,
    redact,
    secret_values,
)
from tests.harness import wait_for
from tests.httpserver import HttpTestServer, serving


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "PASSWORD",
        "db_passwd",
        "token",
        "apiToken",
        "client_secret",
        "key",
        "apiKey",
        "saslPassword",
        "credentials",
        "auth",
        "Authorization",
        "private_key_file",
        "session_cookie",
        "passphrase",
    ],
)
def test_secret_looking_keys_are_secret_in_any_case_and_position(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize("key", ["command", "url", "method", "timeout", "cwd", "subject", "env", "headers"])
def test_ordinary_keys_are_not_secret(key: str) -> None:
    assert not is_secret_key(key)


def test_masked_hides_secret_values_and_keeps_the_rest() -> None:
    config = {"command": "echo hi", "password": "hunter22", "apiKey": "k-123", "token": ""}
    assert masked(config) == {"command": "echo hi", "password": MASK, "apiKey": MASK, "token": ""}
    assert config["password"] == "hunter22", "the original is not changed"
    assert masked(None) is None


def test_masked_hides_secret_headers_of_the_http_executor() -> None:
    headers = json.dumps(["Authorization: Bearer abc.def", "X-Api-Key: 42424242", "Accept: text/plain"])
    shown = json.loads(masked({"headers": headers})["headers"])  # type: ignore[index]
    assert shown == [f"Authorization: {MASK}", f"X-Api-Key: {MASK}", "Accept: text/plain"]


def test_masked_hides_secret_variables_of_the_shell_executor() -> None:
    shown = masked({"env": "DB_PASSWORD=pw-1234,REGION=eu,GITHUB_TOKEN=ghp_x"})
    assert shown == {"env": f"DB_PASSWORD={MASK},REGION=eu,GITHUB_TOKEN={MASK}"}


def test_masked_hides_url_passwords_and_secret_query_parameters_anywhere_in_a_value() -> None:
    shown = masked(
        {
            "url": "https://user:s3cret-pw@example.com:8443/hook?token=t0k3n&page=2#top",
            "command": "curl -s 'https://example.com/x?api_key=abcd1234&q=1'",
            "env": "DATABASE_URL=postgres://app:dbpass99@db/app",
        }
    )
    assert shown == {
        "url": f"https://user:{MASK}@example.com:8443/hook?token={MASK}&page=2#top",
        "command": f"curl -s 'https://example.com/x?api_key={MASK}&q=1'",
        "env": f"DATABASE_URL=postgres://app:{MASK}@db/app",
    }


def test_mask_job_json_masks_executor_and_processor_configs_only() -> None:
    job: dict[str, Any] = {
        "name": "backup",
        "metadata": {"password": "not a config"},
        "executor_config": {"command": "backup.sh", "secret": "s-1"},
        "processors": {"files": {"log_dir": "/tmp"}, "custom": {"auth_token": "a-2"}},
    }
    shown = mask_job_json(job)
    assert shown["executor_config"] == {"command": "backup.sh", "secret": MASK}
    assert shown["processors"] == {"files": {"log_dir": "/tmp"}, "custom": {"auth_token": MASK}}
    assert shown["metadata"] == job["metadata"], "metadata is the user's own labels, shown as it is"
    assert job["executor_config"]["secret"] == "s-1", "the original is not changed"


def test_mask_job_json_leaves_missing_configs_alone() -> None:
    job: dict[str, Any] = {"name": "a", "executor_config": None, "processors": {}}
    assert mask_job_json(job) == job


def test_secrets_are_cut_out_of_free_text() -> None:
    config = {
        "password": "hunter22",
        "headers": json.dumps(["Authorization: Bearer zz-top-secret"]),
        "url": "https://u:url-pass@h/x?token=qwerty99",
        "env": "API_KEY=env-key-1,MODE=fast",
    }
    secrets = secret_values(config, {"custom": {"token": "proc-token"}})
    output = (
        "login hunter22; header Bearer zz-top-secret; url-pass and qwerty99 in the url; "
        "env-key-1; proc-token; mode fast"
    )
    cleaned = redact(output, secrets)
    for secret in ("hunter22", "zz-top-secret", "url-pass", "qwerty99", "env-key-1", "proc-token"):
        assert secret not in cleaned
    assert cleaned.endswith("mode fast")


def test_short_secret_values_are_not_cut_out_of_text() -> None:
    secrets = secret_values({"password": "1", "token": "abc"})
    assert redact("1 abc 2", secrets) == "1 abc 2"


def test_redact_prefers_the_longest_secret() -> None:
    assert redact("abcdefgh", ["abcd", "abcdefgh"]) == MASK


# --------------------------------------------------------------------------- where masking is applied


def test_job_events_carry_the_job_with_its_secrets_masked() -> None:
    config = {"command": "deploy.sh --password=pw-in-cmd", "token": "ghp_abcdef"}
    subject, body = job_event("updated", "deploy", {"name": "deploy", "executor_config": config})
    event = msgspec.json.decode(body)
    assert subject == "dkron.events.job.updated"
    assert event["data"]["executor_config"] == {"command": f"deploy.sh --password={MASK}", "token": MASK}
    assert b"ghp_abcdef" not in body
    assert b"pw-in-cmd" not in body


SECRET = "hunter2-very-secret"
PAYLOAD = "plain={{.Output}} js={{js .Output}} query={{urlquery .Output}} report={{.Report}}"


def _job_with_a_secret() -> JobSpec:
    return JobSpec(
        name="leaky",
        executor="shell",
        executor_config={"command": "echo $DB_PASSWORD", "env": f"DB_PASSWORD={SECRET}"},
    )


def _ended(output: str) -> Execution:
    now = datetime.now(UTC)
    return Execution(
        id="1-n1", job_name="leaky", group=1, node_name="n1", started_at=now, finished_at=now,
        success=True, status="success", output=output,
    )  # fmt: skip


async def _received(server: HttpTestServer, count: int) -> list[str]:
    def arrived() -> list[str] | None:
        bodies = [seen.body.decode() for seen in server.requests]
        return bodies if len(bodies) >= count else None

    return await anyio.to_thread.run_sync(lambda: wait_for(arrived, timeout=10, what="the webhook"))


async def _notify(server: HttpTestServer, send: Any) -> list[str]:
    hook = Webhook(f"{server.url}/ok", PAYLOAD)
    settings = NotifySettings("n1", webhook=hook, pre_webhook=hook)
    # notify_on "always" never reads the history, so no execution store is needed.
    notifier = Notifier(settings, executions=None, retry_delays=())  # type: ignore[arg-type]
    async with anyio.create_task_group() as tg:
        await tg.start(notifier.run)
        send(notifier)
        bodies = await _received(server, 1)
        tg.cancel_scope.cancel()
    return bodies


@pytest.mark.anyio
async def test_webhook_payloads_never_carry_the_jobs_secrets_even_escaped() -> None:
    with serving() as server:
        job = _job_with_a_secret()
        [body] = await _notify(
            server, lambda n: n.launch_ended(job, _ended(f"connecting with {SECRET}\n"), [], "success")
        )
    assert SECRET not in body
    assert "hunter2" not in body, "not even a js or urlquery escaped copy"
    assert f"plain=connecting with {MASK}" in body


@pytest.mark.anyio
async def test_webhook_payloads_never_carry_a_bearer_token_the_command_holds() -> None:
    token = "tok-0123456789abcdef"
    job = JobSpec(
        name="leaky",
        executor="shell",
        executor_config={"command": f"curl -H 'Authorization: Bearer {token}' x"},
    )
    with serving() as server:
        [body] = await _notify(
            server, lambda n: n.launch_ended(job, _ended(f"sent {token}\n"), [], "success")
        )
    assert token not in body
    assert f"plain=sent {MASK}" in body


# --------------------------------------------------------------------------- secrets found by their form


def test_a_reader_sees_bearer_tokens_and_url_passwords_masked_inside_a_command() -> None:
    command = "curl -H 'Authorization: Bearer tok-abcdef123456' https://ops:opspass1@example.com/x?q=1"
    assert masked({"command": command}) == {
        "command": f"curl -H 'Authorization: Bearer {MASK}' https://ops:{MASK}@example.com/x?q=1"
    }


def test_a_reader_sees_secret_json_fields_of_a_body_masked_and_the_rest_as_written() -> None:
    body = '{"user": "svc", "password": "p\\"w-77", "nested": {"apiKey": "k-9876", "pin_token": 123456}}'
    shown = masked({"body": body})
    nested = f'{{"apiKey": "{MASK}", "pin_token": {MASK}}}'
    assert shown == {"body": f'{{"user": "svc", "password": "{MASK}", "nested": {nested}}}'}


def test_secret_name_value_pairs_are_masked_in_any_value_but_variable_references_are_kept() -> None:
    command = (
        'PGPASSWORD=$PW psql; DB_PASSWORD="a b c" run --db-password=xyz123 --tokenizer=bert API_KEY=k1k1'
    )
    shown = masked({"command": command})
    assert shown == {
        "command": f'PGPASSWORD=$PW psql; DB_PASSWORD="{MASK}" run --db-password={MASK} '
        f"--tokenizer=bert API_KEY={MASK}"
    }


def test_what_a_command_holds_of_a_secret_is_cut_out_of_its_output_too() -> None:
    config = {
        "command": "curl -H 'Authorization: Bearer tok-abcdef123456' -d '{\"password\": \"pw-in-body\"}' x",
        "body": '{"client_secret": "cs-12345"}',
    }
    output = "sent tok-abcdef123456 with pw-in-body and cs-12345"
    assert redact(output, secret_values(config)) == f"sent {MASK} with {MASK} and {MASK}"


def test_log_text_loses_url_credentials_secret_query_values_and_bearer_tokens() -> None:
    line = 'HTTP Request: GET http://user:hunter2pass@127.0.0.1:8/x?api_key=abcd1234&page=2 "HTTP/1.1 200 OK"'
    assert (
        mask_text(line)
        == f'HTTP Request: GET http://user:{MASK}@127.0.0.1:8/x?api_key={MASK}&page=2 "HTTP/1.1 200 OK"'
    )
    assert mask_text("sent Authorization: Bearer eyJhbGciOi.x") == f"sent Authorization: Bearer {MASK}"
    assert mask_text("the bearer of bad news") == "the bearer of bad news"


def test_masking_a_long_value_takes_linear_time() -> None:
    # Every log line goes through mask_text: a pattern that backtracks would stall the node on one line.
    started = time.monotonic()
    for text in ("a-" * 50_000, "a=" * 50_000, '"a":' * 25_000, "bearer " * 20_000):
        assert masked({"command": text}) == {"command": text}
    assert time.monotonic() - started < 2.0


# --------------------------------------------------------------------------- the secrets of one run


def test_a_runs_secrets_include_its_secret_parameters_and_secret_named_variables() -> None:
    job = JobSpec(
        name="deploy",
        executor_config={"command": "deploy", "env": "TOKEN=cfg-token-1"},
        parameters=[Parameter(name="TARGET"), Parameter(name="DEPLOY_PIN", secret=True)],
    )
    env = {"TARGET": "production", "DEPLOY_PIN": "pin-4242", "WEBHOOK_SECRET": "ws-1234"}
    assert job_secrets(job, env) == {"cfg-token-1", "pin-4242", "ws-1234"}
    assert job_secrets(JobSpec(name="plain"), env) == {"ws-1234"}, "undeclared: secret by its name only"


def test_the_nodes_own_credentials_are_secrets_of_every_run() -> None:
    environ = {
        "DKRON_NATS_BOOTSTRAP_TOKEN": "bootstrap-abcdef",
        "DKRON_NATS_NATS_URL": "nats://dkron:nats-pass-1@nats:4222",
        "DKRON_NATS_LOG_LEVEL": "debug",
        "HOME_TOKEN": "not the node's",
    }
    assert node_secrets(environ) == {"bootstrap-abcdef", "nats-pass-1"}


# --------------------------------------------------------------------------- streamed output


SPLIT = "s3cr3t-value-123"


def test_a_secret_split_across_writes_is_masked_and_nothing_else_waits() -> None:
    redactor = StreamRedactor([SPLIT])
    shown = redactor.feed(b"db=s3cr3t-value-123\n")
    assert shown == b"db=***\n", "output with no partial secret at its end goes out at once"
    shown += redactor.feed(b"s3cr3t-val")
    assert shown == b"db=***\n", "the first half waits"
    shown += redactor.feed(b"ue-123\nnext s3")
    shown += redactor.flush()
    assert shown == b"db=***\n***\nnext s3", "a half that never became a secret comes out at the end"


def test_a_secret_written_one_byte_at_a_time_is_masked() -> None:
    redactor = StreamRedactor([SPLIT, "other-secret"])
    text = f"a {SPLIT} b s3cr3t c {SPLIT}{SPLIT}".encode()
    shown = b"".join(redactor.feed(text[i : i + 1]) for i in range(len(text))) + redactor.flush()
    assert shown == b"a *** b s3cr3t c ******"


def test_without_secrets_the_output_passes_untouched() -> None:
    redactor = StreamRedactor([])
    assert not redactor
    assert redactor.feed(b"anything") == b"anything"


@pytest.mark.anyio
async def test_the_agents_output_sink_keeps_the_masked_output() -> None:
    execution = Execution(id="1-n1", job_name="printer", group=1)
    running = Running(execution, OutputBuffer(), redactor=StreamRedactor([SPLIT]))
    for chunk in (b"db=" + SPLIT.encode() + b"\n", b"s3cr3t-val", b"ue-123\n", b"tail s3cr"):
        await running.write(chunk)
    await running.end_output()
    assert running.output.text() == "db=***\n***\ntail s3cr"


# --------------------------------------------------------------------------- the node's log


def test_the_log_filter_masks_messages_their_arguments_and_tracebacks() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("test_secrets.redaction")
    logger.propagate = False
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    install(logger)
    install(logger)
    try:
        assert sum(isinstance(f, RedactingFilter) for f in handler.filters) == 1, "installed once"
        logger.warning("GET %s failed", "https://u:pw-in-url@h/x?token=tk-123456")
        try:
            raise ValueError("bad url https://u:pw-in-trace@h/")
        except ValueError:
            logger.exception("request failed with Bearer abcdefgh12345")
    finally:
        logger.removeHandler(handler)
    logged = stream.getvalue()
    for secret in ("pw-in-url", "tk-123456", "pw-in-trace", "abcdefgh12345"):
        assert secret not in logged
    assert f"GET https://u:{MASK}@h/x?token={MASK} failed" in logged
    assert "ValueError: bad url" in logged, "the traceback is still there"
