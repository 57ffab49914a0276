"""The `dkron-nats` command line. The only place that configures logging and installs signal handlers."""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import anyio.to_thread
import click

from dkron_nats import dkronconfig, logsetup
from dkron_nats.agent.jobenv import passthrough_error
from dkron_nats.apiclient import Api, api_options, json_option, print_json
from dkron_nats.auth import ROLES, bootstrap_token_from_env, check_bootstrap_token
from dkron_nats.clicommands import API_COMMANDS
from dkron_nats.config import (
    ENV_PREFIX,
    ConfigError,
    Settings,
    check_api_exposure,
    check_endpoint,
    check_origin,
    default_node_name,
    describe,
    load_config_file,
    parse_header,
    parse_rate,
    parse_tags,
)
from dkron_nats.durations import parse_go_duration
from dkron_nats.egress import parse_networks
from dkron_nats.kv.buckets import DEFAULT_PARTITIONS
from dkron_nats.kv.executions import LANE_PREFIX
from dkron_nats.names import is_token
from dkron_nats.natsauth import NatsAccessError, NatsCredentials, check_agent_creds, check_embedded_options
from dkron_nats.natscli import nats_credentials
from dkron_nats.natsserver import NatsServerError
from dkron_nats.output_formats import output_option, show
from dkron_nats.reload import CONFIG_PATH, NOTICES, NOTIFICATION_SETTINGS, Loaded, Reloader, reread
from dkron_nats.tracing import setup_tracing, shutdown_tracing
from dkron_nats.version import VERSION

LOG_LEVELS = ["debug", "info", "warn", "warning", "error", "fatal", "panic"]


def _env(name: str) -> str:
    return ENV_PREFIX + name.upper().replace("-", "_")


def _load_config(ctx: click.Context, _: click.Parameter, value: str | None) -> None:
    """Read the config file and Dkron's `DKRON_*` variables into click's default map, so flags and
    `DKRON_NATS_*` still win (dkronconfig.py); what they hold without a meaning here goes to `NOTICES`."""
    known = {p.name: p for p in ctx.command.params if p.name and p.name not in ("config", "print_config")}
    in_file = dkronconfig.Defaults({})
    if value:
        try:
            in_file = dkronconfig.from_file(load_config_file(Path(value)), known, Path(value))
        except ConfigError as exc:
            raise click.BadParameter(str(exc), param_hint="--config") from None
        ctx.meta[CONFIG_PATH] = value
    in_env = dkronconfig.from_environment(os.environ, known)
    ctx.meta[NOTICES] = in_file.notices + in_env.notices
    ctx.default_map = {**(ctx.default_map or {}), **in_file.values, **in_env.values}


def _optional_addr(ctx: click.Context, param: click.Parameter, value: str) -> str:
    return _addr(ctx, param, value) if value else value


def _duration(ctx: click.Context, param: click.Parameter, value: str) -> timedelta:
    try:
        return parse_go_duration(str(value))
    except ValueError as exc:
        raise click.BadParameter(f"{exc}; use a duration like 30s, 5m or 1h") from None


def _node_name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not is_token(value) or value.startswith(LANE_PREFIX):
        raise click.BadParameter(
            f"{value!r}: a node name may only contain letters, digits, '_' and '-' (max 64), and may not "
            f"start with '{LANE_PREFIX}' (kept for the lanes of value:N launches)"
        )
    return value


class _HeaderType(click.types.StringParamType):
    """A `Name:value` header; in the environment one per line, since values hold spaces and commas."""

    name = "Name:value"

    def split_envvar_value(self, rv: str) -> list[str]:
        return [line for line in (rv or "").splitlines() if line.strip()]


HEADER = _HeaderType()
NATS_FILE = click.Path(dir_okay=False, path_type=Path)


def _headers(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    flag = (param.name or "").replace("_", "-")
    try:
        for header in value:
            parse_header(flag, header)
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None
    return tuple(value)


def _endpoint(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        return check_endpoint((param.name or "").replace("_", "-"), value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None


def _addr(ctx: click.Context, param: click.Parameter, value: str) -> str:
    _, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{value!r}: use host:port or :port, e.g. :8080")
    return value


@click.group()
@click.version_option(VERSION, prog_name="dkron-nats")
def main() -> None:
    """dkron-nats: distributed, fault-tolerant cron on NATS JetStream (Dkron-compatible)."""


@main.command()
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    callback=_load_config,
    is_eager=True,
    expose_value=False,
    help="YAML, JSON or TOML file whose keys are the flag names; a Dkron file (dkron.yml) works too. "
    "SIGHUP reads it again.",
    envvar=_env("config"),
)
@click.option(
    "--server", is_flag=True, envvar=_env("server"), help="Run the API and take part in leader election."
)
@click.option(
    "--node-name",
    default=default_node_name,
    callback=_node_name,
    envvar=_env("node-name"),
    show_default="host name",
    help="This node's name in the cluster (letters, digits, '_' and '-'); unique per node.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("dkron.data"),
    envvar=_env("data-dir"),
    show_default=True,
    help="Where the embedded NATS keeps JetStream data.",
)
@click.option(
    "--http-addr",
    default="",
    callback=_optional_addr,
    envvar=_env("http-addr"),
    show_default="servers: 127.0.0.1:8080, :8080 with --auth; agents: none",
    help="Address of the API and the web UI on a server; without --auth only a loopback address is "
    "accepted, unless --insecure-no-auth is given. On an agent (no --server), of its /health, /metrics and "
    "/debug/vars only (no API, no authentication); without it an agent listens nowhere.",
)
@click.option("--tag", multiple=True, envvar=_env("tag"), help="Node tag key=value (repeatable).")
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="info",
    envvar=_env("log-level"),
    show_default=True,
    help="Log level; SIGHUP applies a new one.",
)
@click.option(
    "--log-format",
    type=click.Choice(logsetup.LOG_FORMATS),
    default="text",
    envvar=_env("log-format"),
    show_default=True,
    help="text, or json: one JSON object per line (time, level, logger, message, node).",
)
@click.option(
    "--nats-url",
    multiple=True,
    envvar=_env("nats-url"),
    help="Join this NATS (repeatable). Without it an embedded nats-server is started.",
)
@click.option(
    "--nats-listen",
    default="127.0.0.1:4222",
    callback=_addr,
    envvar=_env("nats-listen"),
    show_default=True,
    help="Client address of the embedded nats-server.",
)
@click.option(
    "--nats-cluster-listen",
    default="",
    callback=_optional_addr,
    envvar=_env("nats-cluster-listen"),
    help="Route address (host:port) of the embedded nats-server, to form a NATS cluster.",
)
@click.option(
    "--nats-routes",
    multiple=True,
    envvar=_env("nats-routes"),
    help="Route URL of another embedded server, e.g. nats-route://10.0.0.2:6222 (repeatable).",
)
@click.option(
    "--nats-cluster-name",
    default="dkron",
    envvar=_env("nats-cluster-name"),
    show_default=True,
    help="Name of the embedded servers' NATS cluster (the same on every server).",
)
@click.option("--nats-user", default="", envvar=_env("nats-user"), help="NATS user (with --nats-password).")
@click.option("--nats-password", default="", envvar=_env("nats-password"), help="Password of --nats-user.")
@click.option("--nats-token", default="", envvar=_env("nats-token"), help="NATS authentication token.")
@click.option(
    "--nats-nkey-seed",
    type=NATS_FILE,
    envvar=_env("nats-nkey-seed"),
    help="File holding the NKey seed (SU...) this node signs the server's challenge with.",
)
@click.option(
    "--nats-creds", type=NATS_FILE, envvar=_env("nats-creds"), help="NATS credentials file (user JWT + seed)."
)
@click.option(
    "--nats-tls-ca",
    type=NATS_FILE,
    envvar=_env("nats-tls-ca"),
    help="CA certificate (PEM) to verify NATS with.",
)
@click.option(
    "--nats-tls-cert",
    type=NATS_FILE,
    envvar=_env("nats-tls-cert"),
    help="Client certificate (PEM); the embedded nats-server serves TLS with it and --nats-tls-key.",
)
@click.option("--nats-tls-key", type=NATS_FILE, envvar=_env("nats-tls-key"), help="Key of --nats-tls-cert.")
@click.option(
    "--nats-tls-server-name",
    default="",
    envvar=_env("nats-tls-server-name"),
    help="Name the NATS server's certificate must carry, when it is not the host in the URL.",
)
@click.option(
    "--nats-secret-file",
    type=NATS_FILE,
    envvar=_env("nats-secret-file"),
    show_default="<data-dir>/nats-secret, created on first start",
    help="Cluster secret of the embedded nats-server: its NATS credentials derive from it. Every server "
    "of a cluster needs the same one (`dkron-nats nats-credentials --new-secret FILE` makes one).",
)
@click.option(
    "--nats-store-cipher",
    type=click.Choice(["chachapoly", "aes"]),
    envvar=_env("nats-store-cipher"),
    help="Encrypt the embedded nats-server's store at rest with this cipher (needs --nats-store-key-file).",
)
@click.option(
    "--nats-store-key-file",
    type=NATS_FILE,
    envvar=_env("nats-store-key-file"),
    help="File holding the key of --nats-store-cipher (keep it off the data dir's disk if you can).",
)
@click.option(
    "--nats-store-previous-key-file",
    type=NATS_FILE,
    envvar=_env("nats-store-previous-key-file"),
    help="The store's previous key, to rotate to --nats-store-key-file (the store is re-encrypted).",
)
@click.option(
    "--replicas",
    type=click.IntRange(0, 5),
    default=0,
    envvar=_env("replicas"),
    show_default=True,
    help="JetStream replicas; 0 = 3 when NATS has 3 or more servers, else 1.",
)
@click.option(
    "--datacenter",
    default="dc1",
    envvar=_env("datacenter"),
    show_default=True,
    help="This node's datacenter: its tag `dc` in /v1/members, as in Dkron.",
)
@click.option(
    "--region",
    default="global",
    envvar=_env("region"),
    show_default=True,
    help="This node's region; jobs run only on nodes of the leader's region, as in Dkron.",
)
@click.option(
    "--lease-ttl",
    type=click.FloatRange(2, 300),
    default=15.0,
    envvar=_env("lease-ttl"),
    show_default=True,
    help="Seconds a leader lease lives without renewal.",
)
@click.option(
    "--max-executions",
    type=click.IntRange(1, 100_000),
    default=100,
    envvar=_env("max-executions"),
    show_default=True,
    help="Execution records kept per job.",
)
@click.option(
    "--starting-deadline",
    default="60s",
    callback=_duration,
    envvar=_env("starting-deadline"),
    show_default=True,
    help="A slot later than this is recorded as missed instead of run late.",
)
@click.option(
    "--max-body-size",
    type=click.IntRange(1024, 1 << 30),
    default=1_048_576,
    envvar=_env("max-body-size"),
    show_default=True,
    help="Largest accepted request body in bytes (413 above it).",
)
@click.option(
    "--auth",
    is_flag=True,
    envvar=_env("auth"),
    help="Require an API token (Authorization: Bearer) on every route but /health; "
    "the first admin token comes from DKRON_NATS_BOOTSTRAP_TOKEN.",
)
@click.option(
    "--insecure-no-auth",
    is_flag=True,
    envvar=_env("insecure-no-auth"),
    help="Serve the API beyond loopback with authentication off (anyone who reaches it can run commands "
    "on every node); only when something else guards the port.",
)
@click.option(
    "--cors-origin",
    multiple=True,
    envvar=_env("cors-origin"),
    help="Origin (scheme://host[:port]) whose web pages may call the API besides the UI's own, e.g. the "
    "public https:// address of a TLS proxy in front of the UI (repeatable); requests with any other "
    "Origin are refused with 403.",
)
@click.option(
    "--allowed-host",
    multiple=True,
    envvar=_env("allowed-host"),
    help="Host name an API on a loopback address answers to besides localhost and 127.x, e.g. the name "
    "a local reverse proxy passes on (repeatable); others get 403, which stops DNS rebinding.",
)
@click.option(
    "--http-header-timeout",
    default="10s",
    callback=_duration,
    envvar=_env("http-header-timeout"),
    show_default=True,
    help="How long a client may take to send a request's headers (from their first byte, or from "
    "connecting) before its connection is closed.",
)
@click.option(
    "--http-max-connections",
    type=click.IntRange(10, 1_000_000),
    default=1000,
    envvar=_env("http-max-connections"),
    show_default=True,
    help="Open HTTP connections at most; at the limit, the oldest connection still waiting for headers "
    "makes room, or the new one gets 503.",
)
@click.option(
    "--rate-limit-runs",
    default="50/s",
    envvar=_env("rate-limit-runs"),
    show_default=True,
    help="Runs and job changes (POST, PUT, PATCH, DELETE under /v1/jobs, and /v1/restore) each token, or "
    "each client address without --auth, may make: N/s, N/m or N/h; 0 turns the limit off. Above it: "
    "429 with Retry-After.",
)
@click.option(
    "--rate-limit-burst",
    type=click.IntRange(1, 1_000_000),
    default=100,
    envvar=_env("rate-limit-burst"),
    show_default=True,
    help="How many runs and job changes may come at once before --rate-limit-runs applies.",
)
@click.option(
    "--shutdown-grace",
    default="30s",
    callback=_duration,
    envvar=_env("shutdown-grace"),
    show_default=True,
    help="How long running executions may finish on a graceful stop.",
)
@click.option(
    "--partitions",
    type=click.IntRange(1, 1024),
    default=None,
    envvar=_env("partitions"),
    help=f"Partitions of the job space, each scheduled by one server, spread over the live servers. Read "
    f"when the cluster is created (its first server; default {DEFAULT_PARTITIONS}); a cluster keeps the "
    "count it was created with, and one created before partitions existed has 1.",
)
@click.option(
    "--max-concurrent-executions",
    type=click.IntRange(0, 100_000),
    default=0,
    envvar=_env("max-concurrent-executions"),
    show_default=True,
    help="Executions this node runs at once (0: no limit). Runs sent to it beyond that wait on the node "
    "for a free slot, in the order they came (the wait counts in their lateness); they never fail for it.",
)
@click.option(
    "--job-env-passthrough",
    multiple=True,
    envvar=_env("job-env-passthrough"),
    help="Name of a variable of this process's environment that jobs get too (repeatable); jobs get "
    "only PATH, HOME, LANG, TZ, USER and SHELL otherwise. DKRON_NATS_* is refused.",
)
@click.option(
    "--otel-endpoint",
    default="",
    envvar=_env("otel-endpoint"),
    help="Export traces over OTLP: host:4317 (gRPC, as Dkron) or http://host:4318 (OTLP/HTTP).",
)
@click.option(
    "--enable-prometheus",
    is_flag=True,
    envvar=_env("enable-prometheus"),
    help="Accepted for Dkron compatibility: /metrics is always served.",
)
@click.option("--mail-host", default="", envvar=_env("mail-host"), help="SMTP server for notification mail.")
@click.option(
    "--mail-port",
    type=click.IntRange(0, 65535),
    default=0,
    envvar=_env("mail-port"),
    show_default=True,
    help="SMTP port; 0 sends no mail.",
)
@click.option("--mail-username", default="", envvar=_env("mail-username"), help="SMTP user (PLAIN auth).")
@click.option("--mail-password", default="", envvar=_env("mail-password"), help="SMTP password (PLAIN auth).")
@click.option("--mail-from", default="", envvar=_env("mail-from"), help="Sender address of notifications.")
@click.option(
    "--mail-payload",
    default="",
    envvar=_env("mail-payload"),
    help="Mail body as a Go template ({{.Report}}, {{.JobName}}, ...); empty: the execution's output.",
)
@click.option(
    "--mail-subject-prefix",
    default="[Dkron]",
    envvar=_env("mail-subject-prefix"),
    show_default=True,
    help="Prefix of the notification mail's subject.",
)
@click.option(
    "--webhook-endpoint",
    default="",
    callback=_endpoint,
    envvar=_env("webhook-endpoint"),
    help="URL POSTed to when a launch ends (needs --webhook-payload).",
)
@click.option("--webhook-payload", default="", envvar=_env("webhook-payload"), help="Body, a Go template.")
@click.option(
    "--webhook-headers",
    type=HEADER,
    multiple=True,
    callback=_headers,
    envvar=_env("webhook-headers"),
    help="Header Name:value of the webhook (repeatable; Host sets the request host; env: one per line).",
)
@click.option(
    "--pre-webhook-endpoint",
    default="",
    callback=_endpoint,
    envvar=_env("pre-webhook-endpoint"),
    help="URL POSTed to when a launch starts (needs --pre-webhook-payload).",
)
@click.option(
    "--pre-webhook-payload", default="", envvar=_env("pre-webhook-payload"), help="Body, a Go template."
)
@click.option(
    "--pre-webhook-headers",
    type=HEADER,
    multiple=True,
    callback=_headers,
    envvar=_env("pre-webhook-headers"),
    help="Header Name:value of the pre-webhook (repeatable; env: one per line).",
)
@click.option(
    "--smtp-insecure",
    is_flag=True,
    envvar=_env("smtp-insecure"),
    help="Send --mail-username/--mail-password even when the mail server offers no STARTTLS "
    "(in clear text); without it such mail is refused.",
)
@click.option(
    "--http-allow",
    multiple=True,
    envvar=_env("http-allow"),
    help="Network (CIDR) the http executor and webhooks may reach even if --http-deny or the default "
    "denies it, e.g. 169.254.169.254/32 (repeatable). An address is allowed if an --http-allow holds it, "
    "else refused if an --http-deny or the default (link-local 169.254.0.0/16, fe80::/10: cloud "
    "metadata) holds it, else allowed.",
)
@click.option(
    "--http-deny",
    multiple=True,
    envvar=_env("http-deny"),
    help="Network (CIDR) the http executor and webhooks may not reach, besides the default link-local "
    "ones, e.g. 10.0.0.0/8 (repeatable); checked on every resolved address and every redirect.",
)
@click.option(
    "--files-processor-root",
    type=click.Path(file_okay=False, path_type=Path),
    envvar=_env("files-processor-root"),
    show_default="<data-dir>/processor-files",
    help="The only directory the files processor writes under; a job's log_dir is relative to it.",
)
@click.option(
    "--nats-executor-url",
    default="",
    envvar=_env("nats-executor-url"),
    help="NATS the nats executor publishes to when a job sets no executor_config.url (never the "
    "node's own connection); empty: such jobs fail.",
)
@click.option("--print-config", is_flag=True, help="Print the resolved settings as JSON and exit.")
def agent(print_config: bool, **opts: Any) -> None:
    """Run a node: an agent, or with --server also the API and the scheduler."""
    try:
        settings = _settings(opts)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    ctx = click.get_current_context()
    notices: tuple[str, ...] = ctx.meta.get(NOTICES, ())
    if print_config:
        for notice in notices:
            click.echo(f"warning: {notice}", err=True)
        click.echo(json.dumps(describe(settings), indent=2))
        return
    try:
        check_api_exposure(settings)
        if settings.server:
            check_bootstrap_token(bootstrap_token_from_env())
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    logsetup.configure(settings.log_level, settings.log_format, settings.node_name)
    for notice in notices:
        logging.getLogger(__name__).warning("%s", notice)
    load = functools.partial(reread, ctx, _settings)
    try:
        anyio.run(_run_until_signalled, settings, load, notices)
    except KeyboardInterrupt:
        sys.exit(130)
    except BaseExceptionGroup as group:
        from dkron_nats.node import HttpBindError  # the node module loads only for `agent`

        # A start-up refusal (credentials, a port in use, no nats-server) is a message, not a traceback.
        refused, _ = group.split((NatsAccessError, NatsServerError, HttpBindError))
        if refused is None:
            raise
        raise click.ClickException(str(_first_leaf(refused))) from None


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


def _job_env_passthrough(names: tuple[str, ...]) -> tuple[str, ...]:
    for name in names:
        error = passthrough_error(name)
        if error is not None:
            raise ConfigError(f"--job-env-passthrough {name}: {error}")
    return tuple(names)


def _settings(opts: dict[str, Any]) -> Settings:
    routes = tuple(opts["nats_routes"])
    for route in routes:
        if not route.startswith(("nats-route://", "nats://")) or ":" not in route.split("://", 1)[1]:
            raise ConfigError(f"--nats-routes {route!r}: use nats-route://host:port")
    if routes and not opts["nats_cluster_listen"]:
        raise ConfigError(
            "--nats-routes needs --nats-cluster-listen (the embedded server's own route address)"
        )
    if opts["nats_url"] and (routes or opts["nats_cluster_listen"]):
        raise ConfigError(
            "--nats-cluster-listen/--nats-routes configure the embedded server; drop --nats-url"
        )
    return Settings(
        server=bool(opts["server"]),
        node_name=opts["node_name"],
        data_dir=opts["data_dir"],
        http_addr=opts["http_addr"] or _default_http_addr(opts),
        tags=parse_tags(list(opts["tag"])),
        log_level=opts["log_level"].lower(),
        log_format=opts["log_format"],
        nats_urls=tuple(opts["nats_url"]),
        nats_listen=opts["nats_listen"],
        nats_cluster_listen=opts["nats_cluster_listen"],
        nats_routes=routes,
        nats_cluster_name=_token_setting("nats-cluster-name", opts["nats_cluster_name"]),
        **_nats_security_settings(opts),
        replicas=opts["replicas"],
        datacenter=_token_setting("datacenter", opts["datacenter"]),
        region=_token_setting("region", opts["region"]),
        lease_ttl=opts["lease_ttl"],
        max_executions=opts["max_executions"],
        starting_deadline=opts["starting_deadline"],
        max_body_size=opts["max_body_size"],
        auth=bool(opts["auth"]),
        insecure_no_auth=bool(opts["insecure_no_auth"]),
        cors_origins=tuple(check_origin(origin) for origin in opts["cors_origin"]),
        allowed_hosts=tuple(host.strip().lower() for host in opts["allowed_host"] if host.strip()),
        http_header_timeout=_header_timeout(opts["http_header_timeout"]),
        http_max_connections=opts["http_max_connections"],
        rate_limit_runs=parse_rate(opts["rate_limit_runs"]),
        rate_limit_burst=opts["rate_limit_burst"],
        shutdown_grace=opts["shutdown_grace"],
        max_concurrent_executions=opts["max_concurrent_executions"],
        partitions=opts["partitions"],
        otel_endpoint=opts["otel_endpoint"],
        job_env_passthrough=_job_env_passthrough(opts["job_env_passthrough"]),
        **_notification_settings(opts),
        http_allow=_networks("http-allow", opts["http_allow"]),
        http_deny=_networks("http-deny", opts["http_deny"]),
        files_processor_root=opts["files_processor_root"],
        nats_executor_url=opts["nats_executor_url"],
    )


def _default_http_addr(opts: dict[str, Any]) -> str:
    """A server's API listens by default (beyond loopback only with --auth); an agent's listener is opt-in."""
    if not opts["server"]:
        return ""
    return ":8080" if opts["auth"] else "127.0.0.1:8080"


NATS_SECURITY_OPTIONS = (
    "nats_user",
    "nats_password",
    "nats_token",
    "nats_nkey_seed",
    "nats_creds",
    "nats_tls_ca",
    "nats_tls_cert",
    "nats_tls_key",
    "nats_tls_server_name",
)
NATS_EMBEDDED_OPTIONS = (
    "nats_secret_file",
    "nats_store_cipher",
    "nats_store_key_file",
    "nats_store_previous_key_file",
)


def _nats_security_settings(opts: dict[str, Any]) -> dict[str, Any]:
    """The NATS credentials and TLS options, checked now so a bad combination never reaches NATS."""
    chosen = {name: opts[name] for name in NATS_SECURITY_OPTIONS}
    NatsCredentials(**{name.removeprefix("nats_"): value for name, value in chosen.items()}).check(
        embedded=not opts["nats_url"]
    )
    if opts["nats_creds"] is not None and not opts["server"]:
        check_agent_creds(opts["nats_creds"], opts["node_name"])
    embedded = {name: opts[name] for name in NATS_EMBEDDED_OPTIONS}
    check_embedded_options(embedded, opts)
    return chosen | {**embedded, "nats_store_cipher": embedded["nats_store_cipher"] or ""}


def _notification_settings(opts: dict[str, Any]) -> dict[str, Any]:
    return {name: opts[name] for name in NOTIFICATION_SETTINGS}


def _networks(flag: str, values: tuple[str, ...]) -> tuple[str, ...]:
    """`--http-allow`/`--http-deny`: checked now, kept as given (the policy parses them again)."""
    parse_networks(flag, values)
    return tuple(values)


def _header_timeout(value: timedelta) -> timedelta:
    if not timedelta(0) < value <= timedelta(minutes=5):
        raise ConfigError(f"--http-header-timeout {value.total_seconds():g}s: use more than 0s, at most 5m")
    return value


def _token_setting(name: str, value: str) -> str:
    if not is_token(value):
        raise ConfigError(f"--{name} {value!r}: only letters, digits, '_' and '-' are allowed")
    return value


async def _run_until_signalled(
    settings: Settings, load: Callable[[], Loaded], notices: tuple[str, ...]
) -> None:
    from dkron_nats.node import Node

    setup_tracing(settings.otel_endpoint, settings.node_name, settings.server)
    stop = anyio.Event()
    node = Node(settings, stop)
    reloader = Reloader(node, load, said=notices)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_watch_signals, stop, tg.cancel_scope, reloader.reload)
            await node.run()
            tg.cancel_scope.cancel()
    finally:
        await anyio.to_thread.run_sync(shutdown_tracing)  # sends the spans still buffered


async def _watch_signals(
    stop: anyio.Event, scope: anyio.CancelScope, reload: Callable[[], Awaitable[None]]
) -> None:
    """SIGTERM/SIGINT stop the node (a second one at once); SIGHUP reloads its settings (reload.py)."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            if signum == signal.SIGHUP:
                await reload()
                continue
            if stop.is_set():
                logging.getLogger(__name__).warning("second signal %d: stopping now", signum)
                scope.cancel()
                return
            logging.getLogger(__name__).info("signal %d: stopping gracefully", signum)
            stop.set()


# --- `dkron-nats token`: API tokens, through the API of a running server ---------------------------


@main.group()
def token() -> None:
    """Create, list and revoke API tokens (the caller's own token comes from DKRON_NATS_TOKEN)."""


@token.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(list(ROLES)), required=True)
@click.option(
    "--ttl",
    default=None,
    help="How long the token lives: a Go duration (24h, 720h) or ISO-8601 (P90D); without it, until revoked.",
)
@api_options
@json_option
def token_create(name: str, role: str, ttl: str | None, api: Api, as_json: bool) -> None:
    """Create a token NAME with ROLE; prints the token, which is shown only this once."""
    wanted = {"name": name, "role": role} | ({"ttl": ttl} if ttl else {})
    created = api.call("POST", "/v1/tokens", wanted)
    if as_json:
        print_json(created)
        return
    expires = f", expires {created['expires_at']}" if created.get("expires_at") else ""
    shown = f"token {created['name']} ({created['role']}{expires})"
    click.echo(f"{shown}; store it now, it is not shown again:", err=True)
    click.echo(created["token"])


@token.command("list")
@api_options
@output_option
def token_list(api: Api, output: str) -> None:
    """List the tokens (names and roles, never the tokens themselves)."""
    tokens = api.call("GET", "/v1/tokens")
    show(output, tokens, tokens, ("name", "role", "created_at", "created_by", "expires_at"))


@token.command("revoke")
@click.argument("name")
@api_options
@json_option
def token_revoke(name: str, api: Api, as_json: bool) -> None:
    """Revoke the token NAME: every server refuses it from then on."""
    revoked = api.call("DELETE", f"/v1/tokens/{quote(name, safe='')}", missing=f"no token is named {name!r}")
    click.echo(json.dumps(revoked) if as_json else f"revoked token {name}")


for _group in API_COMMANDS:
    main.add_command(_group)
main.add_command(nats_credentials)

if __name__ == "__main__":  # pragma: no cover
    main()
