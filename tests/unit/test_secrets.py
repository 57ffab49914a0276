"""The rules that keep executor and processor secrets out of events, notifications and read-only views.

The notification tests run the real notifier against a real HTTP receiver (tests/httpserver.py).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import anyio
import anyio.to_thread
import msgspec
import pytest

from dkron_nats.events import job_event
from dkron_nats.leader.notify import Notifier, NotifySettings, Webhook
from dkron_nats.models import Execution, JobSpec
from dkron_nats.secrets import MASK, is_secret_key, mask_job_json, masked, redact, secret_values
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
    job = {"name": "deploy", "executor_config": {"command": "deploy.sh", "token": "ghp_abcdef"}}
    subject, body = job_event("updated", "deploy", job)
    event = msgspec.json.decode(body)
    assert subject == "dkron.events.job.updated"
    assert event["data"]["executor_config"] == {"command": "deploy.sh", "token": MASK}
    assert b"ghp_abcdef" not in body


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
