"""Notifications the leader sends: mail and a webhook when a launch ends, a pre-webhook when one starts.

Dkron's contract (`--mail-*`, `--webhook-*`, `--pre-webhook-*`, payloads rendered by templates.py), with
these differences, all on purpose:

* once per launch, when its last execution is final (Dkron: once per node, and the pre-webhook once per
  streamed output chunk);
* a job's `notify_on` picks which ended launches send mail and the webhook (`always`, Dkron's behaviour;
  `failure`; `recovery`, a success after a launch that did not succeed; `failure_and_recovery`);
  the pre-webhook always fires;
* sending happens in this notifier's own workers, fed by a bounded queue: a slow or dead receiver never
  delays result processing, dependent jobs or history (a full queue drops the notification, logged);
* a failed send is retried (3 attempts, 1 s then 2 s apart), then dropped with an error in the log;
* secrets of the job's executor and processor configs (see secrets.py) are cut out of every payload, so an
  output that echoes a password does not mail it;
* webhooks go only where the node's egress policy allows (`--http-allow`/`--http-deny`, egress.py), checked
  on every address and every redirect; a refused one is logged and not retried;
* with `--mail-username`/`--mail-password`, mail is sent only after STARTTLS: a server that does not offer
  it gets no credentials (and no mail), unless `--smtp-insecure` says to send them in clear text.

Only the leader notifies: `run` belongs to the leader session's task group, and nothing is queued while it
is not running.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from email.message import EmailMessage
from email.utils import formatdate, getaddresses, make_msgid

import anyio
import httpx
import msgspec
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from opentelemetry.context import Context, get_current

from dkron_nats.config import Settings, parse_header
from dkron_nats.egress import EgressDenied, EgressPolicy, guarded_transport
from dkron_nats.kv.executions import ExecutionStore, execution_id, lane_of
from dkron_nats.leader.templates import Report, problem, render
from dkron_nats.models import Execution, JobSpec
from dkron_nats.secrets import job_secrets, redact
from dkron_nats.timefmt import utcnow
from dkron_nats.tracing import tracer

logger = logging.getLogger(__name__)

QUEUE_SIZE = 1000
"""Notifications waiting to be sent; beyond this they are dropped (and logged), never waited for."""
WORKERS = 4
RETRY_DELAYS = (1.0, 2.0)
"""Pauses between the 3 attempts of one send."""
SEND_TIMEOUT = 10.0
REMEMBERED = 10_000
"""Launches (or jobs) remembered for de-duplication and `recovery`."""


@dataclass(frozen=True, slots=True)
class Webhook:
    endpoint: str
    payload: str
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Mail:
    host: str
    port: int
    username: str = ""
    password: str = ""
    sender: str = ""
    payload: str = ""
    subject_prefix: str = "[Dkron]"
    insecure: bool = False
    """Send the credentials even without STARTTLS (`--smtp-insecure`)."""


class NotificationRefused(Exception):
    """Sending would break a rule (credentials in clear text): not retried, logged with the way out."""


@dataclass(frozen=True, slots=True)
class NotifySettings:
    reporting_node: str
    mail: Mail | None = None
    webhook: Webhook | None = None
    pre_webhook: Webhook | None = None
    egress: EgressPolicy = field(default_factory=EgressPolicy)
    """Where webhooks may connect (`--http-allow`/`--http-deny`)."""

    @classmethod
    def from_settings(cls, s: Settings) -> NotifySettings:
        """What is configured, like Dkron: mail needs host and port, a webhook its endpoint and payload."""
        mail = None
        if s.mail_host and s.mail_port:
            mail = Mail(
                s.mail_host,
                s.mail_port,
                s.mail_username,
                s.mail_password,
                s.mail_from,
                s.mail_payload,
                s.mail_subject_prefix,
                s.smtp_insecure,
            )
        elif s.mail_host or s.mail_port:
            logger.warning("notification mail is off: set both --mail-host and --mail-port")
        webhook = _webhook("webhook", s.webhook_endpoint, s.webhook_payload, s.webhook_headers)
        pre_webhook = _webhook(
            "pre-webhook", s.pre_webhook_endpoint, s.pre_webhook_payload, s.pre_webhook_headers
        )
        settings = cls(s.node_name, mail, webhook, pre_webhook, EgressPolicy.from_settings(s))
        settings.warn_about_templates()
        return settings

    def warn_about_templates(self) -> None:
        """A template that cannot render is sent as Dkron sends it ("Failed to ..."); say so at start."""
        templates = {
            "--mail-payload": self.mail.payload if self.mail else "",
            "--webhook-payload": self.webhook.payload if self.webhook else "",
            "--pre-webhook-payload": self.pre_webhook.payload if self.pre_webhook else "",
        }
        for flag, source in templates.items():
            why = problem(source) if source else None
            if why:
                logger.warning("%s cannot be rendered; notifications will carry this text: %s", flag, why)


def _webhook(flag: str, endpoint: str, payload: str, headers: Sequence[str]) -> Webhook | None:
    if endpoint and payload:
        return Webhook(endpoint, payload, tuple(parse_header(f"{flag}-headers", h) for h in headers))
    if endpoint or payload:
        logger.warning("the %s is off: set both --%s-endpoint and --%s-payload", flag, flag, flag)
    return None


@dataclass(frozen=True, slots=True)
class _LaunchStarted:
    report: Report
    secrets: frozenset[str] = frozenset()
    """The job's secret config values, cut out of the payload."""
    trace: Context = field(default_factory=get_current)
    """The launch's trace, where the sending shows up."""


@dataclass(frozen=True, slots=True)
class _LaunchEnded:
    job: JobSpec
    report: Report
    previous_ok: bool | None
    """How the job's previous launch ended, if this leader saw it (else the history is read)."""
    trace: Context = field(default_factory=get_current)


_Item = _LaunchStarted | _LaunchEnded


class Notifier:
    def __init__(
        self,
        settings: NotifySettings,
        executions: ExecutionStore,
        retry_delays: Sequence[float] = RETRY_DELAYS,
    ) -> None:
        self.settings = settings
        self.executions = executions
        self.retry_delays = tuple(retry_delays)
        self._queue: MemoryObjectSendStream[_Item] | None = None
        self._client: httpx.AsyncClient | None = None
        self._announced: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._outcomes: OrderedDict[str, bool] = OrderedDict()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Send queued notifications until cancelled (when the leadership ends)."""
        send, receive = anyio.create_memory_object_stream[_Item](QUEUE_SIZE)
        self._announced.clear()
        self._outcomes.clear()  # a new leadership: launches may have ended meanwhile on another leader
        # Redirects are followed, as Go's HTTP client (Dkron's) follows them; each hop's connection is
        # checked against the egress policy.
        client = httpx.AsyncClient(
            transport=guarded_transport(self.settings.egress), timeout=SEND_TIMEOUT, follow_redirects=True
        )
        self._client, self._queue = client, send
        try:
            with receive:
                async with anyio.create_task_group() as tg:
                    for _ in range(WORKERS):
                        tg.start_soon(self._work, receive.clone())
                    task_status.started()
        finally:
            self._queue = self._client = None
            send.close()
            with anyio.move_on_after(2, shield=True):
                await client.aclose()

    # --- what the leader reports (never blocks, never raises) ---------------------------------------

    def launch_started(
        self, job: JobSpec, group: int, scheduled_at: datetime | None, targets: Sequence[str]
    ) -> None:
        """A launch was dispatched (its first attempt): the pre-webhook, once per launch."""
        if self.settings.pre_webhook is None or not targets or _seen(self._announced, (job.name, group)):
            return
        now = utcnow()
        launch = [
            Execution(
                id=execution_id(group, node),
                job_name=job.name,
                group=group,
                node_name=node,
                started_at=now,
                scheduled_at=scheduled_at,
            )
            for node in targets
        ]
        # The launch's first execution stands for all of it, naming every target node.
        first = msgspec.structs.replace(launch[0], node_name=",".join(targets))
        report = Report(first, launch, self.settings.reporting_node, False, "running")
        self._submit(_LaunchStarted(report, job_secrets(job)))

    def launch_ended(
        self, job: JobSpec, execution: Execution, others: Sequence[Execution], status: str
    ) -> None:
        """Every execution of a launch is final (`status` is the launch's): mail and webhook, per notify_on.

        Called in the order launches end, so that `recovery` compares with the launch that ended before.
        """
        ok = status == "success"
        previous = self._outcomes.pop(job.name, None)
        self._outcomes[job.name] = ok
        while len(self._outcomes) > REMEMBERED:
            self._outcomes.popitem(last=False)
        if self.settings.webhook is None and not (self.settings.mail and job.owner_email):
            return
        launch = sorted([execution, *others], key=lambda e: e.id)
        report = Report(execution, launch, self.settings.reporting_node, ok, status)
        self._submit(_LaunchEnded(job, report, previous))

    def _submit(self, item: _Item) -> None:
        queue = self._queue
        what = f"{item.report.execution.job_name} launch {item.report.execution.group}"
        if queue is None:
            logger.debug("not leading any more: no notification for %s", what)
            return
        try:
            queue.send_nowait(item)
        except anyio.WouldBlock:
            logger.error("notification queue full (%d waiting): dropped the one for %s", QUEUE_SIZE, what)

    # --- the workers -----------------------------------------------------------------------------------

    async def _work(self, items: MemoryObjectReceiveStream[_Item]) -> None:
        async with items:
            async for item in items:
                try:
                    kind = "pre-webhook" if isinstance(item, _LaunchStarted) else "notify"
                    attributes = {"dkron.job": item.report.execution.job_name}
                    with tracer().start_as_current_span(kind, context=item.trace, attributes=attributes):
                        await self._handle(item)
                except Exception:  # one bad notification must not stop the others from being sent
                    logger.exception("notification for job %s failed", item.report.execution.job_name)

    async def _handle(self, item: _Item) -> None:
        if isinstance(item, _LaunchStarted):
            if self.settings.pre_webhook is not None:
                await self._post("pre-webhook", self.settings.pre_webhook, item.report, item.secrets)
            return
        if not await self._wanted(item):
            return
        mail, webhook, job = self.settings.mail, self.settings.webhook, item.job
        secrets = job_secrets(job)
        async with anyio.create_task_group() as tg:  # a mail server being retried does not hold the webhook
            if mail is not None and job.owner_email:
                tg.start_soon(self._mail, mail, job.owner_email, item.report, secrets)
            if webhook is not None:
                tg.start_soon(self._post, "webhook", webhook, item.report, secrets)

    async def _wanted(self, item: _LaunchEnded) -> bool:
        """Whether the job's notify_on asks for this ended launch."""
        mode, ok = item.job.notify_on, item.report.success
        if mode == "always" or (not ok and mode in ("failure", "failure_and_recovery")):
            return True
        if not ok or mode not in ("recovery", "failure_and_recovery"):
            return False
        previous = item.previous_ok
        if previous is None:
            previous = await self._previous_outcome(item.job.name, item.report.execution.group)
        return previous is False

    async def _previous_outcome(self, job: str, group: int) -> bool | None:
        """How the launch before `group` ended, read from the history (None: there was none)."""
        latest: dict[str, Execution] = {}
        earlier = [
            ex
            for ex in await self.executions.history(job)
            if ex.group < group and ex.finished and ex.status not in ("missed", "skipped")
        ]
        if not earlier:
            return None
        last_group = max(ex.group for ex in earlier)
        for ex in sorted((e for e in earlier if e.group == last_group), key=lambda e: e.attempt):
            latest[lane_of(ex.id, ex.group)] = ex  # a node's latest attempt decides
        return all(ex.success for ex in latest.values())

    async def _post(self, what: str, hook: Webhook, report: Report, secrets: frozenset[str]) -> None:
        body = _rendered(hook.payload, report, secrets).encode()
        headers = dict(hook.headers)  # a repeated name: the last one wins, as in Dkron

        async def post() -> None:
            client = self._client
            if client is None:
                raise RuntimeError("the notifier stopped")
            response = await client.post(hook.endpoint, content=body, headers=headers)
            if not response.is_success:
                raise RuntimeError(f"answered {response.status_code} {response.reason_phrase}")

        await self._with_retries(f"{what} to {hook.endpoint} for {_launch(report)}", post)

    async def _mail(self, mail: Mail, to: str, report: Report, secrets: frozenset[str]) -> None:
        message = _message(mail, to, report, secrets)
        await self._with_retries(
            f"mail to {to} via {mail.host}:{mail.port} for {_launch(report)}",
            lambda: anyio.to_thread.run_sync(_send_mail, mail, message, abandon_on_cancel=True),
        )

    async def _with_retries(self, what: str, send: Callable[[], Awaitable[None]]) -> None:
        attempts = len(self.retry_delays) + 1
        for attempt in range(1, attempts + 1):
            try:
                await send()
                return
            except (EgressDenied, NotificationRefused) as exc:  # the same refusal on every attempt
                logger.error("%s refused: %s", what, exc)
                return
            except Exception as exc:  # noqa: BLE001 - any failure of one send is retried, then dropped
                why = str(exc) or type(exc).__name__
                if attempt == attempts:
                    logger.error("%s failed %d times, dropped: %s", what, attempts, why)
                    return
                delay = self.retry_delays[attempt - 1]
                logger.warning(
                    "%s failed (attempt %d of %d): %s; retrying in %gs", what, attempt, attempts, why, delay
                )
                await anyio.sleep(delay)


def _seen(remembered: OrderedDict[tuple[str, int], None], key: tuple[str, int]) -> bool:
    """Whether `key` was seen before; remembers it (bounded)."""
    if key in remembered:
        return True
    remembered[key] = None
    while len(remembered) > REMEMBERED:
        remembered.popitem(last=False)
    return False


def _rendered(template: str, report: Report, secrets: frozenset[str]) -> str:
    """The payload with the job's secrets cut out: from the outputs before rendering (a `js` or `urlquery`
    would disguise them), and from the result (a secret may show up in any field)."""
    if not secrets:
        return render(template, report)

    def clean(ex: Execution) -> Execution:
        return msgspec.structs.replace(ex, output=redact(ex.output, secrets))

    cleaned = replace(report, execution=clean(report.execution), launch=[clean(e) for e in report.launch])
    return redact(render(template, cleaned), secrets)


def _launch(report: Report) -> str:
    return f"{report.execution.job_name} (launch {report.execution.group})"


def _message(mail: Mail, to: str, report: Report, secrets: frozenset[str] = frozenset()) -> EmailMessage:
    """Dkron's mail: subject `<prefix><Success|Failed> <job> execution report`, the rendered body."""
    ex = report.execution
    body = _rendered(mail.payload, report, secrets) if mail.payload else redact(ex.output, secrets)
    message = EmailMessage()
    message["Subject"] = (
        f"{mail.subject_prefix}{'Success' if report.success else 'Failed'} {ex.job_name} execution report"
    )
    if mail.sender:
        message["From"] = mail.sender
    message["To"] = to
    message["Date"] = formatdate()
    # An explicit domain: the default asks DNS for this host's name, which can hang.
    message["Message-ID"] = make_msgid(domain=mail.sender.rpartition("@")[2] or "dkron-nats.invalid")
    message.set_content(body)
    return message


def _send_mail(mail: Mail, message: EmailMessage) -> None:
    """Blocking SMTP delivery (run in a worker thread): STARTTLS if offered, PLAIN auth if configured.

    Credentials never go in clear text unless `--smtp-insecure`: a server (or a man in the middle) that
    does not offer STARTTLS gets neither them nor the mail.
    """
    recipients = [address for _, address in getaddresses([str(message["To"])]) if address]
    with smtplib.SMTP(mail.host, mail.port, local_hostname="localhost", timeout=SEND_TIMEOUT) as smtp:
        smtp.ehlo()
        if smtp.has_extn("starttls"):
            smtp.starttls(context=ssl.create_default_context())
            smtp.ehlo()
        elif mail.username and mail.password and not mail.insecure:
            raise NotificationRefused(
                f"{mail.host}:{mail.port} does not offer STARTTLS, so --mail-username/--mail-password "
                "would go in clear text: use a mail server that offers STARTTLS, or set --smtp-insecure "
                "to send them anyway"
            )
        if mail.username and mail.password:
            smtp.user, smtp.password = mail.username, mail.password
            smtp.auth("PLAIN", smtp.auth_plain)
        smtp.send_message(message, from_addr=mail.sender, to_addrs=recipients)
