"""Notifications end to end: a real dkron-nats server sending to a real SMTP server and HTTP receivers.

The SMTP server (aiosmtpd) and the webhook receiver (a threaded stdlib HTTP server) run in this process on
free ports; the server under test is a `dkron-nats agent --server` subprocess configured with Dkron's
notification flags. Negative checks ("no webhook for this launch") are made once a later launch's
notification has arrived: notifications are queued in order, so an unwanted one would have come first.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult

from tests.harness import DKRON_NATS, Node, executions, finished, free_port, job, running, wait_for

OWNER = "owner@example.test"
WEBHOOK_PAYLOAD = (
    '{"job": "{{ .JobName }}", "success": {{.Success}}, "node": "{{.NodeName}}", '
    '"reporter": "{{.ReportingNode}}", "status": "{{.Status}}", "attempt": {{.Attempt}}, '
    '"group": {{.ExecutionGroup}}, "output": {{printf "%q" .Output}}, '
    '"verdict": "{{if eq .Success "true"}}ok{{else}}FAILED{{end}}"}'
)
PRE_WEBHOOK_PAYLOAD = (
    '{"job": "{{.JobName}}", "attempt": {{.Attempt}}, "group": {{.ExecutionGroup}}, '
    '"node": "{{.NodeName}}", "finished": "{{.FinishedAt}}", "status": "{{.Status}}"}'
)
MAIL_PAYLOAD = (
    'Job {{.JobName}} on {{.NodeName}} {{if eq .Success "true"}}succeeded{{else}}FAILED{{end}}\n'
    "{{- /* the output follows */}}\n{{.Output}}"
)


# ---------------------------------------------------------------------------------------------------------
# Real counterparts


@dataclass(frozen=True)
class Mail:
    sender: str
    recipients: list[str]
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def body(self) -> str:
        """The text, with SMTP's CRLF line ends back to the LF the job wrote."""
        text: str = self.message.get_content()
        return text.replace("\r\n", "\n")


class Inbox:
    """An aiosmtpd handler that keeps every message it accepts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._mails: list[Mail] = []
        self.port = free_port()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self._lock:
            self._mails.append(Mail(envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 Message accepted"

    def about(self, job_name: str) -> list[Mail]:
        with self._lock:
            return [m for m in self._mails if f" {job_name} execution report" in m.subject]


@dataclass(frozen=True)
class Hook:
    path: str
    headers: dict[str, str]
    body: str
    status: int
    at: float

    @property
    def json(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.body)
        return loaded


class Receiver:
    """A webhook receiver: records every POST; answers 500 to the first ones about a job if told to."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.hooks: list[Hook] = []
        self._failures: dict[tuple[str, str], int] = {}
        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), self._handler())
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def fail_first(self, path: str, job_name: str, times: int) -> None:
        with self._lock:
            self._failures[(path, f'"{job_name}"')] = times

    def received(self, path: str, job_name: str, status: int = 200) -> list[Hook]:
        with self._lock:
            hooks = [h for h in self.hooks if h.path == path and f'"{job_name}"' in h.body]
        return [h for h in hooks if h.status == status]

    def _answer(self, path: str, headers: dict[str, str], body: str) -> int:
        with self._lock:
            rule = next(
                (r for r, left in self._failures.items() if left and r[0] == path and r[1] in body), None
            )
            status = 500 if rule else 200
            if rule:
                self._failures[rule] -= 1
            self.hooks.append(Hook(path, headers, body, status, time.monotonic()))
        return status

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
                headers = {k.lower(): v for k, v in self.headers.items()}
                status = receiver._answer(self.path, headers, body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=10)


@pytest.fixture(scope="module")
def inbox() -> Iterator[Inbox]:
    handler = Inbox()
    controller = Controller(handler, hostname="127.0.0.1", port=handler.port)
    controller.start()
    try:
        yield handler
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as running_receiver:
        yield running_receiver


def _mail_flags(inbox: Inbox, payload: str = MAIL_PAYLOAD) -> list[str]:
    flags = ["--mail-host", "127.0.0.1", "--mail-port", str(inbox.port), "--mail-from", "dkron@example.test"]
    return flags + (["--mail-payload", payload] if payload else [])


def _hook_flags(receiver: Receiver) -> list[str]:
    return [
        "--webhook-endpoint",
        receiver.url("/post"),
        "--webhook-payload",
        WEBHOOK_PAYLOAD,
        "--webhook-headers",
        "Content-Type: application/json",
        "--webhook-headers",
        "Host: hooks.example.test",
        "--webhook-headers",
        "X-Token:abc:def",
        "--pre-webhook-endpoint",
        receiver.url("/pre"),
        "--pre-webhook-payload",
        PRE_WEBHOOK_PAYLOAD,
        "--pre-webhook-headers",
        "X-Phase: pre",
    ]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, inbox: Inbox, receiver: Receiver) -> Iterator[Node]:
    """A server with mail, webhook and pre-webhook configured (each test uses its own job names)."""
    node = Node(tmp_path_factory.mktemp("notify"), extra=_mail_flags(inbox) + _hook_flags(receiver))
    with running(node) as started:
        yield started


# ---------------------------------------------------------------------------------------------------------
# Helpers


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def shell_job(name: str, command: str, **fields: Any) -> dict[str, Any]:
    config = {"command": command, "shell": "true"}
    return job(name, "@manually", command, executor_config=config, owner_email=OWNER, **fields)


def create(node: Node, body: dict[str, Any]) -> None:
    response = node.post("/v1/jobs", json=body)
    assert response.status_code == 201, response.text


def run(node: Node, name: str) -> None:
    response = node.post(f"/v1/jobs/{name}/run")
    assert response.status_code == 200, response.text


def run_and_finish(node: Node, name: str, count: int) -> list[dict[str, Any]]:
    """Run the job once more and wait until it has `count` finished executions."""
    run(node, name)
    return wait_for(lambda: finished(node, name, count), timeout=20, what=f"execution {count} of {name}")


def posts(receiver: Receiver, name: str, count: int, path: str = "/post") -> list[Hook]:
    """The job's accepted webhooks once there are `count` of them, in launch order."""

    def enough() -> list[Hook] | None:
        hooks = receiver.received(path, name)
        return hooks if len(hooks) >= count else None

    hooks = wait_for(enough, timeout=20, what=f"{count} {path} webhooks about {name}")
    return sorted(hooks, key=lambda h: int(h.json["group"]))


def mails(inbox: Inbox, name: str, count: int) -> list[Mail]:
    def enough() -> list[Mail] | None:
        found = inbox.about(name)
        return found if len(found) >= count else None

    return wait_for(enough, timeout=20, what=f"{count} mails about {name}")


# ---------------------------------------------------------------------------------------------------------
# Mail and webhook


def test_mail_on_success_and_on_failure(server: Node, inbox: Inbox) -> None:
    ok, broken = unique("mail-ok"), unique("mail-broken")
    create(server, shell_job(ok, "echo all good"))
    create(server, shell_job(broken, "echo disk full; exit 3"))
    run(server, ok)
    run(server, broken)
    [success] = mails(inbox, ok, 1)
    assert success.subject == f"[Dkron]Success {ok} execution report"
    assert success.recipients == [OWNER]
    assert success.sender == "dkron@example.test"
    assert success.message["To"] == OWNER
    assert success.body == f"Job {ok} on n1 succeeded\nall good\n"
    [failure] = mails(inbox, broken, 1)
    assert failure.subject == f"[Dkron]Failed {broken} execution report"
    assert failure.recipients == [OWNER]
    assert failure.body.startswith(f"Job {broken} on n1 FAILED\ndisk full\n")


def test_no_mail_without_an_owner_email(server: Node, inbox: Inbox, receiver: Receiver) -> None:
    name = unique("no-owner")
    create(server, shell_job(name, "true") | {"owner_email": ""})
    run(server, name)
    posts(receiver, name, 1)  # the launch's notifications were sent: the webhook came
    assert inbox.about(name) == []


def test_webhook_body_is_rendered_and_carries_the_headers(server: Node, receiver: Receiver) -> None:
    name = unique("hook")
    create(server, shell_job(name, "echo '\"quoted\" text'; exit 2"))
    run(server, name)
    [hook] = posts(receiver, name, 1)
    [execution] = executions(server, name)
    assert hook.json == {
        "job": name,
        "success": False,
        "node": "n1",
        "reporter": "n1",
        "status": "failed",
        "attempt": 1,
        "group": execution["group"],
        "output": execution["output"],
        "verdict": "FAILED",
    }
    assert '"quoted" text' in hook.json["output"]
    assert hook.headers["host"] == "hooks.example.test"
    assert hook.headers["content-type"] == "application/json"
    assert hook.headers["x-token"] == "abc:def"


def test_pre_webhook_once_per_launch_even_with_a_retry(server: Node, receiver: Receiver) -> None:
    name = unique("pre")
    # Output in several chunks and a failing first attempt: still one pre-webhook per launch.
    create(server, shell_job(name, 'echo one; echo two; test "$DKRON_ATTEMPT" -ge 2', retries=1))
    run_and_finish(server, name, 2)
    first_end = posts(receiver, name, 1)
    run_and_finish(server, name, 4)
    ends = posts(receiver, name, 2)
    pre = [h.json for h in receiver.received("/pre", name)]
    assert len(pre) == 2, pre
    assert [p["group"] for p in sorted(pre, key=lambda p: p["group"])] == [h.json["group"] for h in ends]
    assert all(p["attempt"] == 1 and p["node"] == "n1" and p["status"] == "running" for p in pre)
    assert all(p["finished"] == "0001-01-01 00:00:00 +0000 UTC" for p in pre)
    assert all(h.headers["x-phase"] == "pre" for h in receiver.received("/pre", name))
    # The launch ends once, after its retry: one webhook, about the successful second attempt.
    assert [(h.json["attempt"], h.json["success"]) for h in ends] == [(2, True), (2, True)]
    assert first_end[0].json["group"] == ends[0].json["group"]


def test_a_failing_receiver_is_retried_until_it_accepts(server: Node, receiver: Receiver) -> None:
    name = unique("flaky")
    receiver.fail_first("/post", name, 2)
    create(server, shell_job(name, "true"))
    run(server, name)
    posts(receiver, name, 1)
    tries = [h for h in receiver.hooks if h.path == "/post" and f'"{name}"' in h.body]
    assert [h.status for h in tries] == [500, 500, 200]
    assert tries[1].at - tries[0].at >= 0.9, "the second attempt came without the 1 s backoff"
    assert tries[2].at - tries[1].at >= 1.9, "the third attempt came without the 2 s backoff"
    assert "failed (attempt 1 of 3): answered 500" in server.logs()


@dataclass
class TlsInbox:
    inbox: Inbox
    ca_file: Path
    logins: list[tuple[str, bytes, bytes]]


@pytest.fixture
def tls_inbox(tmp_path: Path) -> Iterator[TlsInbox]:
    """An SMTP server that requires STARTTLS (a certificate from a test CA) before AUTH and mail."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    logins: list[tuple[str, bytes, bytes]] = []

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, auth: Any) -> AuthResult:
        logins.append((mechanism, auth.login, auth.password))
        return AuthResult(success=(auth.login, auth.password) == (b"mailer", b"s3cret"))

    handler = Inbox()
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=handler.port,
        tls_context=context,
        require_starttls=True,
        auth_required=True,
        authenticator=authenticate,
    )
    controller.start()
    try:
        yield TlsInbox(handler, ca_file, logins)
    finally:
        controller.stop()


def test_mail_uses_starttls_when_offered_and_plain_auth(tmp_path: Path, tls_inbox: TlsInbox) -> None:
    credentials = ["--mail-username", "mailer", "--mail-password", "s3cret"]
    node = Node(
        tmp_path / "data",
        extra=_mail_flags(tls_inbox.inbox) + credentials,
        env={"SSL_CERT_FILE": str(tls_inbox.ca_file)},  # trust the test CA
    )
    name = unique("tls-mail")
    with running(node):
        create(node, shell_job(name, "echo secret report"))
        run(node, name)
        [mail] = mails(tls_inbox.inbox, name, 1)
    assert mail.body == f"Job {name} on n1 succeeded\nsecret report\n"
    assert tls_inbox.logins == [("PLAIN", b"mailer", b"s3cret")]


# ---------------------------------------------------------------------------------------------------------
# notify_on


def test_notify_on_sequences(server: Node, inbox: Inbox, receiver: Receiver, tmp_path: Path) -> None:
    flag = tmp_path / "healthy"
    modes = ("always", "failure", "recovery", "failure_and_recovery")
    names = {mode: unique(f"on-{mode.replace('_', '-')}") for mode in modes}
    for mode, name in names.items():
        create(server, shell_job(name, f"test -f {flag}", notify_on=mode))
        stored = server.get(f"/v1/jobs/{name}").json()["notify_on"]
        assert stored == mode, "notify_on was not stored: dkron_nats/jobs.py _spec_from must copy it"
    for launch in range(1, 5):  # fail, fail, succeed, succeed
        if launch == 3:
            flag.touch()
        for name in names.values():
            run_and_finish(server, name, launch)
    # `always` notified every launch; its last webhook was queued after every other job's last launch.
    assert [h.json["success"] for h in posts(receiver, names["always"], 4)] == [False, False, True, True]
    expected = {"failure": [False, False], "recovery": [True], "failure_and_recovery": [False, False, True]}
    for mode, outcomes in expected.items():
        hooks = posts(receiver, names[mode], len(outcomes))
        assert [h.json["success"] for h in hooks] == outcomes, mode
        subjects = sorted(
            m.subject.split("]")[1].split()[0] for m in mails(inbox, names[mode], len(outcomes))
        )
        assert subjects == sorted("Success" if ok else "Failed" for ok in outcomes), mode
    assert len(receiver.received("/pre", names["recovery"])) == 4, "the pre-webhook always fires"


def test_recovery_is_judged_from_the_history_after_a_restart(
    tmp_path: Path, inbox: Inbox, receiver: Receiver
) -> None:
    flag = tmp_path / "healthy"
    name, witness = unique("recover"), unique("witness")
    node = Node(tmp_path / "data", extra=_hook_flags(receiver))
    with running(node):
        create(node, shell_job(name, f"test -f {flag}", notify_on="recovery"))
        stored = node.get(f"/v1/jobs/{name}").json()["notify_on"]
        assert stored == "recovery", "notify_on was not stored: dkron_nats/jobs.py _spec_from must copy it"
        create(node, shell_job(witness, "true"))
        run_and_finish(node, name, 1)
        node.stop()
        node.start().wait_leader()  # a new leadership: it has not seen the failure itself
        flag.touch()
        run_and_finish(node, name, 2)
        [recovered] = posts(receiver, name, 1)
        assert recovered.json["success"] is True
        run_and_finish(node, name, 3)  # a success after a success: no notification
        run_and_finish(node, witness, 1)
        posts(receiver, witness, 1)
        assert len(receiver.received("/post", name)) == 1


def test_notify_on_is_validated_and_defaults_to_always(server: Node) -> None:
    name = unique("notify-default")
    created = server.post("/v1/jobs", json=shell_job(name, "true"))
    assert created.json()["notify_on"] == "always"
    assert server.get(f"/v1/jobs/{name}").json()["notify_on"] == "always"
    refused = server.post("/v1/jobs", json=shell_job(name, "true", notify_on="weekly"))
    assert refused.status_code == 400
    assert 'invalid notify_on "weekly"' in refused.text


# ---------------------------------------------------------------------------------------------------------
# A dead receiver delays nothing


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers: every webhook to it hangs until its timeout."""
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen(64)
        yield port


def test_a_hanging_webhook_delays_neither_dependents_nor_history(
    tmp_path: Path, inbox: Inbox, silent_port: int
) -> None:
    hooks = [
        "--webhook-endpoint",
        f"http://127.0.0.1:{silent_port}/hook",
        "--webhook-payload",
        "{{.JobName}}",
    ]
    node = Node(tmp_path / "data", extra=_mail_flags(inbox, payload="") + hooks)
    parent, child = unique("parent"), unique("child")
    with running(node):
        create(node, shell_job(parent, "echo parent says hi"))
        create(node, job(child, "", "true", parent_job=parent))
        started = time.monotonic()
        run(node, parent)
        wait_for(lambda: finished(node, child, 1), timeout=20, what="the child job")
        # The webhook of the parent's launch waits 10 s per attempt; the child did not wait for it.
        assert time.monotonic() - started < 8
        [record] = executions(node, parent)
        assert record["success"] is True
        assert node.get(f"/v1/jobs/{parent}").json()["status"] == "success"
        # Without --mail-payload the mail is the output, and it is not held up by the webhook either.
        [mail] = mails(inbox, parent, 1)
        assert mail.body == record["output"] == "parent says hi\n"


# ---------------------------------------------------------------------------------------------------------
# Settings


def _print_config(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DKRON_NATS, "agent", *args, "--print-config"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )


def test_notification_settings_from_flags_environment_and_dkrons_config_file(tmp_path: Path) -> None:
    conf = tmp_path / "dkron.yml"
    # Dkron's example configuration writes one header as a plain string.
    conf.write_text(
        'webhook-endpoint: "https://hooks.example.test/services/x"\n'
        'webhook-payload: \'payload={"text": "{{.Report}}", "channel": "#foo"}\'\n'
        "webhook-headers: Content-Type:application/x-www-form-urlencoded\n"
        "mail-host: smtp.example.test\nmail-port: 25\nmail-password: hunter2\n"
    )
    env = {"DKRON_NATS_PRE_WEBHOOK_HEADERS": "X-One: a b\nX-Two: c, d\n"}
    result = _print_config("--config", str(conf), "--mail-subject-prefix", "[cron] ", env=env)
    assert result.returncode == 0, result.stderr
    settings = json.loads(result.stdout)
    assert settings["webhook_headers"] == ["Content-Type:application/x-www-form-urlencoded"]
    assert settings["webhook_payload"] == 'payload={"text": "{{.Report}}", "channel": "#foo"}'
    assert settings["pre_webhook_headers"] == ["X-One: a b", "X-Two: c, d"]
    assert (settings["mail_host"], settings["mail_port"]) == ("smtp.example.test", 25)
    assert settings["mail_subject_prefix"] == "[cron] "
    assert settings["mail_password"] == "(set)", "the password must not be printed"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--webhook-headers", "no colon here"], "--webhook-headers 'no colon here': use Name:value"),
        (["--pre-webhook-headers", ":value"], "--pre-webhook-headers ':value': use Name:value"),
        (["--webhook-endpoint", "hooks.example.test/x"], "use an absolute http:// or https:// URL"),
        (["--mail-port", "70000"], "--mail-port"),
    ],
)
def test_bad_notification_settings_are_refused_naming_the_flag(args: list[str], message: str) -> None:
    result = _print_config(*args)
    assert result.returncode == 2
    assert message in result.stderr


# ---------------------------------------------------------------------------------------------------------
# Credentials only over TLS; webhooks only where the egress policy allows


class _RecordingSmtp(SMTP):
    """aiosmtpd's server, noting the commands that matter here as they arrive."""

    commands: list[str]

    async def smtp_EHLO(self, hostname: str) -> None:
        self.commands.append(f"EHLO {hostname}")
        await super().smtp_EHLO(hostname)

    async def smtp_AUTH(self, arg: str) -> None:
        self.commands.append(f"AUTH {arg}")
        await super().smtp_AUTH(arg)


class _RecordingController(Controller):
    def __init__(self, handler: Inbox, commands: list[str], **kwargs: Any) -> None:
        self.commands = commands
        super().__init__(handler, **kwargs)

    def factory(self) -> SMTP:
        server = _RecordingSmtp(self.handler, **self.SMTP_kwargs)
        server.commands = self.commands
        return server


@dataclass
class PlainInbox:
    inbox: Inbox
    commands: list[str]
    logins: list[tuple[str, bytes, bytes]]


@pytest.fixture
def plain_inbox() -> Iterator[PlainInbox]:
    """An SMTP server without STARTTLS that would take AUTH PLAIN in clear text (as a downgrading MITM)."""
    commands: list[str] = []
    logins: list[tuple[str, bytes, bytes]] = []

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, auth: Any) -> AuthResult:
        logins.append((mechanism, auth.login, auth.password))
        return AuthResult(success=True)

    handler = Inbox()
    controller = _RecordingController(
        handler,
        commands,
        hostname="127.0.0.1",
        port=handler.port,
        auth_require_tls=False,
        authenticator=authenticate,
    )
    controller.start()
    try:
        yield PlainInbox(handler, commands, logins)
    finally:
        controller.stop()


MAIL_CREDENTIALS = ["--mail-username", "mailer", "--mail-password", "s3cret"]


def test_credentials_are_not_sent_to_a_server_without_starttls(
    tmp_path: Path, plain_inbox: PlainInbox
) -> None:
    node = Node(tmp_path / "data", extra=_mail_flags(plain_inbox.inbox) + MAIL_CREDENTIALS)
    name = unique("no-starttls")
    with running(node):
        create(node, shell_job(name, "echo report"))
        run(node, name)
        refusal = (
            "does not offer STARTTLS, so --mail-username/--mail-password would go in clear text: use a "
            "mail server that offers STARTTLS, or set --smtp-insecure to send them anyway"
        )
        wait_for(lambda: refusal in node.logs(), timeout=20, what="the refusal in the log")
    assert any(command.startswith("EHLO") for command in plain_inbox.commands)
    assert not [command for command in plain_inbox.commands if command.startswith("AUTH")]
    assert plain_inbox.logins == []
    assert plain_inbox.inbox.about(name) == []
    log = node.logs()
    assert f"mail to {OWNER} via 127.0.0.1:{plain_inbox.inbox.port} for {name}" in log
    assert "s3cret" not in log
    assert "retrying" not in log  # a refusal is the same on every attempt: it is not retried


def test_smtp_insecure_sends_credentials_without_starttls(tmp_path: Path, plain_inbox: PlainInbox) -> None:
    node = Node(
        tmp_path / "data", extra=[*_mail_flags(plain_inbox.inbox), *MAIL_CREDENTIALS, "--smtp-insecure"]
    )
    name = unique("insecure-mail")
    with running(node):
        create(node, shell_job(name, "echo report"))
        run(node, name)
        [mail] = mails(plain_inbox.inbox, name, 1)
    assert mail.body == f"Job {name} on n1 succeeded\nreport\n"
    assert plain_inbox.logins == [("PLAIN", b"mailer", b"s3cret")]
    assert [command.split()[:2] for command in plain_inbox.commands if command.startswith("AUTH")] == [
        ["AUTH", "PLAIN"]
    ]


def test_webhooks_go_only_where_the_egress_policy_allows(tmp_path: Path, receiver: Receiver) -> None:
    """--http-deny 127.0.0.0/8 with --http-allow 127.0.0.1/32: the webhook to 127.0.0.1 is delivered, the
    pre-webhook to 127.0.0.2 (the same receiver's port) is refused before any connection, not retried."""
    port = receiver.server.server_address[1]
    flags = [
        "--http-deny",
        "127.0.0.0/8",
        "--http-allow",
        "127.0.0.1/32",
        "--webhook-endpoint",
        receiver.url("/egress-post"),
        "--webhook-payload",
        '{"job": "{{.JobName}}", "group": {{.ExecutionGroup}}}',
        "--pre-webhook-endpoint",
        f"http://127.0.0.2:{port}/egress-pre",
        "--pre-webhook-payload",
        '{"job": "{{.JobName}}"}',
    ]
    node = Node(tmp_path / "data", extra=flags)
    name = unique("egress")
    with running(node):
        create(node, shell_job(name, "true"))
        run(node, name)
        posts(receiver, name, 1, path="/egress-post")
        refusal = f"pre-webhook to http://127.0.0.2:{port}/egress-pre for {name} (launch "
        wait_for(lambda: refusal in node.logs(), timeout=20, what="the pre-webhook refusal in the log")
        log = node.logs()
    assert (
        "refused: refused to connect to 127.0.0.2: it is in 127.0.0.0/8, which --http-deny refuses; "
        "to allow it, start the node with --http-allow 127.0.0.2/32"
    ) in log
    assert receiver.received("/egress-pre", name) == []
    assert "retrying" not in log
