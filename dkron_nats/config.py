"""Settings: one frozen object built once by the CLI (flags > environment > config file > defaults)."""

from __future__ import annotations

import ipaddress
import json
import socket
import tomllib
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from dkron_nats.names import is_token
from dkron_nats.version import VERSION

ENV_PREFIX = "DKRON_NATS_"


class ConfigError(ValueError):
    """A setting is unknown or invalid; the message names it."""


@dataclass(frozen=True, slots=True)
class Settings:
    server: bool = False
    node_name: str = field(default_factory=lambda: default_node_name())
    data_dir: Path = Path("dkron.data")
    http_addr: str = "127.0.0.1:8080"
    """The CLI's default is `:8080` with `--auth` and loopback without it (see `check_api_exposure`)."""
    tags: dict[str, str] = field(default_factory=dict)
    log_level: str = "info"
    log_format: str = "text"
    """`text` (one line per record) or `json` (one JSON object per line, see dkron_nats/logformat.py)."""
    nats_urls: tuple[str, ...] = ()
    nats_listen: str = "127.0.0.1:4222"
    nats_cluster_listen: str = ""
    """Route address of the embedded nats-server; set it to cluster embedded servers together."""
    nats_routes: tuple[str, ...] = ()
    nats_cluster_name: str = "dkron"
    # NATS credentials and TLS, for every connection of the node (see dkron_nats/natsauth.py)
    nats_user: str = ""
    nats_password: str = ""
    nats_token: str = ""
    nats_nkey_seed: Path | None = None
    nats_creds: Path | None = None
    nats_tls_ca: Path | None = None
    nats_tls_cert: Path | None = None
    """Client certificate; the embedded nats-server serves TLS with it (and `nats_tls_key`)."""
    nats_tls_key: Path | None = None
    nats_tls_server_name: str = ""
    nats_secret_file: Path | None = None
    """The embedded servers' cluster secret (NATS credentials are derived from it); None:
    `<data_dir>/nats-secret`, created on first start. Unused with --nats-user/--nats-token."""
    nats_store_cipher: str = ""
    """JetStream encryption at rest of the embedded server: chachapoly or aes; empty: none."""
    nats_store_key_file: Path | None = None
    nats_store_previous_key_file: Path | None = None
    """The key the store was encrypted with before --nats-store-key-file (to rotate the key)."""
    replicas: int = 0
    """JetStream replicas for buckets and streams; 0 = 3 when the NATS cluster has 3+ servers, else 1."""
    datacenter: str = "dc1"
    region: str = "global"
    lease_ttl: float = 15.0
    member_ttl: float = 10.0
    max_executions: int = 100
    starting_deadline: timedelta = timedelta(seconds=60)
    max_body_size: int = 1_048_576
    auth: bool = False
    """Require an API token on every route but /health (dkron_nats/auth.py)."""
    # The API's edge (dkron_nats/http/middleware.py, server.py, ratelimit.py)
    insecure_no_auth: bool = False
    """Let the API listen beyond loopback with authentication off (start-up refuses that otherwise)."""
    cors_origins: tuple[str, ...] = ()
    """Origins (`https://host[:port]`) other than the UI's own whose pages may call the API."""
    allowed_hosts: tuple[str, ...] = ()
    """Host names a loopback API answers to besides localhost and 127.x (a proxy's public name)."""
    http_header_timeout: timedelta = timedelta(seconds=10)
    """How long a client may take to send a request's headers; then its connection is closed."""
    http_max_connections: int = 1000
    """Open HTTP connections at most; above it, connections still waiting for headers are closed."""
    rate_limit_runs: float = 50.0
    """Runs and job changes per second for each token (or client address without --auth); 0: no limit."""
    rate_limit_burst: int = 100
    """How many of them may come at once before the rate applies."""
    shutdown_grace: timedelta = timedelta(seconds=30)
    partitions: int | None = None
    """Partitions of the job space (`--partitions`), fixed when the cluster is created; None: the cluster's
    count, `DEFAULT_PARTITIONS` for a new one."""
    max_concurrent_executions: int = 0
    """Executions this node's agent runs at once; the others wait on it for a free slot. 0: no limit."""
    otel_endpoint: str = ""
    """OTLP trace export (Dkron's flag); empty: no tracing."""
    job_env_passthrough: tuple[str, ...] = ()
    """Variables of the agent's environment that jobs get beside the base set (dkron_nats/agent/jobenv.py)."""
    # Notifications (sent by the leader only; Dkron's flags, see dkron_nats/leader/notify.py)
    mail_host: str = ""
    mail_port: int = 0
    mail_username: str = ""
    mail_password: str = ""
    mail_from: str = ""
    mail_payload: str = ""
    mail_subject_prefix: str = "[Dkron]"
    smtp_insecure: bool = False
    """Allow SMTP AUTH without TLS when the mail server offers no STARTTLS (the password goes in clear)."""
    webhook_endpoint: str = ""
    webhook_payload: str = ""
    webhook_headers: tuple[str, ...] = ()
    """`Name:value` strings, as Dkron takes them."""
    pre_webhook_endpoint: str = ""
    pre_webhook_payload: str = ""
    pre_webhook_headers: tuple[str, ...] = ()
    # What executors, processors and webhooks may reach (egress.py, agent/processors.py, nats_executor.py)
    http_allow: tuple[str, ...] = ()
    """CIDRs the http executor and webhooks may connect to even when denied (by --http-deny or by default)."""
    http_deny: tuple[str, ...] = ()
    """CIDRs refused besides the built-in link-local (cloud metadata) networks."""
    files_processor_root: Path | None = None
    """Where the `files` processor writes; None: `<data_dir>/processor-files`."""
    nats_executor_url: str = ""
    """NATS the `nats` executor publishes to when a job gives no `url`; empty: such jobs are refused."""


SECRET_SETTINGS = frozenset({"mail_password", "nats_password", "nats_token", "nats_executor_url"})
"""Never printed (`--print-config` shows whether they are set, not their value)."""


def node_tags(settings: Settings) -> dict[str, str]:
    """The tags Dkron sets on every node (`server`/`dkron_server` on servers), then the user's own."""
    tags = {"role": "dkron", "dc": settings.datacenter, "region": settings.region, "version": VERSION}
    if settings.server:
        tags |= {"server": "true", "dkron_server": "true"}
    return tags | settings.tags


def describe(settings: Settings) -> dict[str, Any]:
    """The resolved settings as JSON-friendly values (for `--print-config`)."""
    out: dict[str, Any] = {}
    for name in settings.__dataclass_fields__:
        value = getattr(settings, name)
        if isinstance(value, timedelta):
            value = value.total_seconds()
        elif isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple):
            value = [redact_url(v) for v in value] if name == "nats_urls" else list(value)
        if name in SECRET_SETTINGS and value:
            value = "(set)"
        out[name] = value
    out["node_tags"] = node_tags(settings)
    return out


def redact_url(url: str) -> str:
    """`nats://user:secret@host` shown as `nats://user:***@host`, `nats://token@host` as `nats://***@host`."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not sep or not at:
        return url
    user, colon, _ = userinfo.partition(":")
    return f"{scheme}://{user}:***@{host}" if colon else f"{scheme}://***@{host}"


def is_loopback_host(host: str) -> bool:
    """`localhost`, `127.x.x.x` or `::1` (brackets allowed); a host name may resolve to anything: False."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_api_exposure(settings: Settings) -> None:
    """Refuse an API that anyone on the network could use: authentication off beyond loopback."""
    if not settings.server or settings.auth or settings.insecure_no_auth:
        return
    host = settings.http_addr.rpartition(":")[0]
    if not is_loopback_host(host):
        raise ConfigError(
            f"--http-addr {settings.http_addr} would let anyone who reaches this address run commands on "
            "every node, because authentication is off: turn it on with --auth (and "
            "DKRON_NATS_BOOTSTRAP_TOKEN for the first admin token), listen on loopback only "
            "(--http-addr 127.0.0.1:8080), or, if something else guards the port, pass --insecure-no-auth"
        )


def parse_rate(text: str) -> float:
    """`--rate-limit-runs`: `N/s`, `N/m` or `N/h` (a bare N is per second) as events per second; 0: off."""
    count, _, unit = text.strip().lower().partition("/")
    per = {"": 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}.get(unit.strip())
    try:
        rate = float(count)
    except ValueError:
        rate = -1.0
    if per is None or not rate >= 0 or rate == float("inf"):
        raise ConfigError(f"--rate-limit-runs {text!r}: use a count per second, minute or hour: 50/s, 600/m")
    return rate / per


def check_origin(origin: str) -> str:
    """A `--cors-origin`: `scheme://host[:port]` as browsers send it in `Origin`, returned normalised."""
    parts = urlsplit(origin.strip())
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("http", "https") or not parts.hostname or port == -1 or parts.path.strip("/"):
        raise ConfigError(f"--cors-origin {origin!r}: use scheme://host[:port], e.g. https://ui.example.com")
    return normal_origin(parts.scheme, parts.hostname, port)


def normal_origin(scheme: str, host: str, port: int | None) -> str:
    """`scheme://host:port` in lower case with the port always written (80 and 443 when left out)."""
    scheme = scheme.lower()
    host = host.lower()
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{scheme}://{host}:{port or (443 if scheme == 'https' else 80)}"


def default_node_name() -> str:
    """The host name, reduced to the characters a node name may contain."""
    raw = socket.gethostname().split(".")[0]
    cleaned = "".join(ch if (ch.isalnum() and ch.isascii()) or ch in "_-" else "-" for ch in raw)
    return cleaned[:64] or "node"


def parse_tags(pairs: tuple[str, ...] | list[str] | dict[str, str]) -> dict[str, str]:
    """`--tag k=v` pairs (or a mapping from a config file) into validated node tags."""
    items = pairs.items() if isinstance(pairs, dict) else [_split_pair(p) for p in pairs]
    tags: dict[str, str] = {}
    for key, value in items:
        if not is_token(str(key)) or not is_token(str(value)):
            raise ConfigError(
                f"invalid tag {key}={value}: keys and values may only hold letters, digits, '_', '-'"
            )
        tags[str(key)] = str(value)
    return tags


def _split_pair(pair: str) -> tuple[str, str]:
    key, sep, value = pair.partition("=")
    if not sep:
        raise ConfigError(f"invalid tag {pair!r}: use --tag key=value")
    return key, value


def parse_header(flag: str, text: str) -> tuple[str, str]:
    """A `Name:value` header of `--webhook-headers`/`--pre-webhook-headers` (the value is trimmed)."""
    name, sep, value = text.partition(":")
    name = name.strip()
    value = value.strip()
    bad_name = any(ch.isspace() or ch in '()<>@,;\\"/[]?={}' for ch in name)
    if not sep or not name or bad_name or any(ord(ch) < 32 and ch != "\t" for ch in value):
        raise ConfigError(f"--{flag} {text!r}: use Name:value, e.g. Content-Type:application/json")
    return name, value


def check_endpoint(flag: str, url: str) -> str:
    """A webhook endpoint must be an absolute http(s) URL."""
    scheme, sep, rest = url.partition("://")
    if url and (not sep or scheme.lower() not in ("http", "https") or not rest.split("/")[0]):
        raise ConfigError(f"--{flag} {url!r}: use an absolute http:// or https:// URL")
    return url


def _parse_problem(exc: Exception) -> str:
    """What is wrong and where, on one line (YAML's own message spans several, quoting the text)."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"line {mark.line + 1}, column {mark.column + 1}: {exc.problem}"
    return " ".join(str(exc).split())


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a YAML, JSON or TOML file whose keys are flag names (`node-name: web1`)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    suffix = path.suffix.lower()
    try:
        if suffix in (".yml", ".yaml"):
            data = yaml.safe_load(text) or {}
        elif suffix == ".json":
            data = json.loads(text)
        elif suffix == ".toml":
            data = tomllib.loads(text)
        else:
            raise ConfigError(f"config file {path}: use a .yml, .yaml, .json or .toml file")
    except (yaml.YAMLError, json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid: {_parse_problem(exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of setting names to values")
    return data
