"""Settings given the way Dkron takes them: a `dkron.yml` and `DKRON_*` environment variables.

A Dkron key with a meaning here sets the dkron-nats option of the same name (`webhook-url`, Dkron's older name
of the webhook's address, sets `webhook-endpoint`). A Dkron key without one (Serf, Raft, statsd, ...) is
reported once with the reason and otherwise ignored, so a Dkron install's file starts a node. A file key that
neither dkron-nats nor Dkron knows is refused, with the closest known key: a typo must not pass unnoticed.

Precedence: flags > `DKRON_NATS_*` > `DKRON_*` > the config file > defaults. Both the file and `DKRON_*` are
read into click's default map (see `defaults`), which is below click's own flags and `DKRON_NATS_*`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from dkron_nats.config import ENV_PREFIX, ConfigError

DKRON_ENV_PREFIX = "DKRON_"

SAME_MEANING = frozenset(
    {
        "server",
        "node-name",
        "data-dir",
        "http-addr",
        "tag",
        "log-level",
        "datacenter",
        "region",
        "otel-endpoint",
        "enable-prometheus",
        "mail-host",
        "mail-port",
        "mail-username",
        "mail-password",
        "mail-from",
        "mail-payload",
        "mail-subject-prefix",
        "webhook-endpoint",
        "webhook-payload",
        "webhook-headers",
        "pre-webhook-endpoint",
        "pre-webhook-payload",
        "pre-webhook-headers",
    }
)
"""Dkron's keys that are also dkron-nats options, with the same meaning."""

RENAMED = {"webhook-url": "webhook-endpoint"}
"""Dkron's keys read as a dkron-nats option of another name."""

_GOSSIP = "Dkron's Serf gossip; nodes meet through NATS here (--nats-listen, --nats-cluster-listen)"
_JOIN = (
    "Dkron's Serf join; servers form a NATS cluster with --nats-cluster-listen and "
    "--nats-routes nats-route://HOST:PORT, agents join with --nats-url nats://SERVER:4222"
)
_STATSD = "no statsd export here; scrape /metrics (Prometheus) or use --otel-endpoint"
_DISPATCH = "Dkron's gRPC dispatch retries; runs go over NATS here, and a job's `retries` retries failed runs"
_STORE = "Dkron 1's external store; the state lives in NATS JetStream here"

IGNORED = {
    "bootstrap-expect": "JetStream forms its cluster from the servers' routes (--nats-routes); "
    "--replicas follows the cluster size",
    "bootstrap": "JetStream forms its cluster from the servers' routes (--nats-routes)",
    "bind-addr": _GOSSIP,
    "advertise-addr": _GOSSIP,
    "profile": _GOSSIP,
    "serf-reconnect-timeout": "Dkron's Serf; a failed node's record stays in /v1/members until it is reaped",
    "rpc-port": "Dkron's gRPC port; nodes talk through NATS here",
    "advertise-rpc-port": "Dkron's gRPC port; nodes talk through NATS here",
    "join": _JOIN,
    "retry-join": _JOIN,
    "retry-max": "Dkron's Serf join retries; NATS reconnects by itself, without limit",
    "retry-interval": "Dkron's Serf join retries; NATS reconnects by itself, without limit",
    "encrypt": "Dkron's Serf gossip key; NATS connections use credentials derived from the cluster secret "
    "(--nats-secret-file) and TLS with --nats-tls-*",
    "raft-multiplier": "Dkron's Raft timing; a leader's lease lives --lease-ttl seconds here",
    "ui": "servers always serve the web UI at /ui/",
    "statsd-addr": _STATSD,
    "dog-statsd-addr": _STATSD,
    "dog-statsd-tags": _STATSD,
    "cronitor-endpoint": "no Cronitor integration; --webhook-endpoint can call it",
    "disable-usage-stats": "dkron-nats sends no usage statistics",
    "agent-run-max-retries": _DISPATCH,
    "agent-run-retry-initial-interval": _DISPATCH,
    "agent-run-retry-max-interval": _DISPATCH,
    "backend": _STORE,
    "backend-machine": _STORE,
    "keyspace": _STORE,
}
"""Dkron's keys that have no meaning in dkron-nats, with the reason (shown to the user)."""

DKRON_KEYS = SAME_MEANING | RENAMED.keys() | IGNORED.keys()


@dataclass(frozen=True, slots=True)
class Defaults:
    """Option values for click's default map (option names, `node_name`), and what was ignored, said once."""

    values: dict[str, Any]
    notices: tuple[str, ...] = ()


def ignored_notice(key: str, where: str) -> str:
    return f"{where}: Dkron's {key!r} is ignored, it has no meaning in dkron-nats: {IGNORED[key]}"


def from_file(data: Mapping[Any, Any], options: Mapping[str, click.Parameter], path: Path) -> Defaults:
    """The file's keys as option values: ours, Dkron's with a meaning; Dkron's others noted; typos refused."""
    values: dict[str, Any] = {}
    notices: list[str] = []
    where = f"config file {path}"
    for raw_key, item in data.items():
        key = str(raw_key)
        dashed = key.replace("_", "-")
        if dashed in ("tags", "tag") and isinstance(item, dict):
            values["tag"] = [f"{k}={v}" for k, v in item.items()]
        elif (name := key.replace("-", "_")) in options:
            values[name] = _listed(options[name], item)
        elif dashed in RENAMED:
            target = RENAMED[dashed]
            if _given(data, target):
                notices.append(f"{where}: {key!r} (Dkron's older name) is ignored: {target!r} is set too")
            else:
                values[target.replace("-", "_")] = _listed(options[target.replace("-", "_")], item)
        elif dashed in IGNORED:
            notices.append(ignored_notice(dashed, where))
        else:
            raise ConfigError(_unknown(key, where, options))
    _dotless_node_name(values, where, notices)
    return Defaults(values, tuple(notices))


def from_environment(environ: Mapping[str, str], options: Mapping[str, click.Parameter]) -> Defaults:
    """`DKRON_<KEY>` variables of Dkron's keys: those with a meaning as option values (a `DKRON_NATS_*`
    variable of the same option still wins, being click's own), the others noted. Variables Dkron does not
    read either (a job's `DKRON_JOB_NAME`) are none of this function's business."""
    values: dict[str, Any] = {}
    notices: list[str] = []
    for variable in sorted(environ):
        ours = variable.startswith(ENV_PREFIX)
        if ours or not variable.startswith(DKRON_ENV_PREFIX) or not environ[variable]:
            continue
        key = variable.removeprefix(DKRON_ENV_PREFIX).lower().replace("_", "-")
        target = RENAMED.get(key, key)
        if target in SAME_MEANING and (param := options.get(target.replace("-", "_"))) is not None:
            value = environ[variable]
            values[param.name or ""] = param.type.split_envvar_value(value) if param.multiple else value
        elif key in IGNORED:
            notices.append(ignored_notice(key, f"environment variable {variable}"))
    _dotless_node_name(values, "environment variable DKRON_NODE_NAME", notices)
    return Defaults(values, tuple(notices))


def _dotless_node_name(values: dict[str, Any], where: str, notices: list[str]) -> None:
    """Dkron's node name defaults to the full host name; here a name is a NATS subject token (no dots)."""
    name = values.get("node_name")
    if isinstance(name, str) and "." in name:
        values["node_name"] = name.replace(".", "-")
        notices.append(
            f"{where}: node-name {name!r} is used as {values['node_name']!r} (a node name here may not "
            "contain '.')"
        )


def _listed(param: click.Parameter, item: Any) -> Any:
    """A repeatable option given one value (`webhook-headers: Content-Type:application/json`, as Dkron's
    files write it) is a list of one."""
    return [item] if param.multiple and isinstance(item, str) else item


def _given(data: Mapping[Any, Any], key: str) -> bool:
    return any(str(k).replace("_", "-") == key for k in data)


def _unknown(key: str, where: str, options: Iterable[str]) -> str:
    """Name the unknown key, and the closest known one if there is one."""
    known = sorted({name.replace("_", "-") for name in options} | {"tags"} | DKRON_KEYS)
    close = difflib.get_close_matches(key.replace("_", "-"), known, n=1, cutoff=0.75)
    hint = (
        f"did you mean {close[0]!r}?"
        if close
        else "it is neither a dkron-nats nor a Dkron setting (the keys are in docs/configuration.md)"
    )
    return f"unknown setting {key!r} in {where}: {hint}"
