"""SIGHUP: read the configuration again, apply what can change while the node runs, name what cannot.

The settings are read the way the node was started (its flags, which still win, its environment, its
`--config` file again), into a new `Settings`. Those in `APPLIED_AT_RUN_TIME` take effect at once (the node's
tags reach its member record, and so job targeting, right away); any other that differs is logged as waiting
for a restart, and the running value stays. A file that cannot be read or holds a bad value changes nothing:
the error is logged with what to fix, and the node goes on as it was. A reload never ends the process.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import click
from click.core import ParameterSource

from dkron_nats import logsetup
from dkron_nats.config import ConfigError, Settings, describe

logger = logging.getLogger(__name__)

CONFIG_PATH = "dkron_nats.config_path"
"""`click.Context.meta` key: the `--config` file the node read."""
NOTICES = "dkron_nats.config_notices"
"""`click.Context.meta` key: what the settings' sources said (ignored Dkron keys), to be logged once."""

MEMBER_SETTINGS = frozenset({"tags", "datacenter"})
"""What the node's member record shows (its tags): other nodes see a change with the record."""
LOG_SETTINGS = frozenset({"log_level", "log_format"})
NOTIFICATION_SETTINGS = frozenset(
    {
        "mail_host",
        "mail_port",
        "mail_username",
        "mail_password",
        "mail_from",
        "mail_payload",
        "mail_subject_prefix",
        "smtp_insecure",
        "webhook_endpoint",
        "webhook_payload",
        "webhook_headers",
        "pre_webhook_endpoint",
        "pre_webhook_payload",
        "pre_webhook_headers",
    }
)
"""Read by the leader's notifier for each notification it sends."""
PROCESSOR_SETTINGS = frozenset({"files_processor_root"})
"""Read by the processors for each execution they process (`ProcessorRegistry.configure`)."""
APPLIED_AT_RUN_TIME = MEMBER_SETTINGS | LOG_SETTINGS | NOTIFICATION_SETTINGS | PROCESSOR_SETTINGS

_KEYS = {"nats_urls": "nats-url", "cors_origins": "cors-origin", "allowed_hosts": "allowed-host"}
"""Settings whose config key is not their name with dashes."""


@dataclass(frozen=True, slots=True)
class Loaded:
    settings: Settings
    notices: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Change:
    """How newly read settings differ from the running ones."""

    running: Settings
    """The settings the node runs with from now on: the old ones with the applied fields taken over."""
    applied: frozenset[str]
    needs_restart: frozenset[str]


class Reconfigurable(Protocol):
    settings: Settings

    async def apply_settings(self, settings: Settings, changed: frozenset[str]) -> None: ...


def compare(old: Settings, new: Settings) -> Change:
    differ = {f.name for f in dataclasses.fields(Settings) if getattr(old, f.name) != getattr(new, f.name)}
    applied = frozenset(differ & APPLIED_AT_RUN_TIME)
    running = dataclasses.replace(old, **{name: getattr(new, name) for name in applied})
    return Change(running, applied, frozenset(differ - applied))


def config_key(field: str) -> str:
    """The config-file key (and flag name) of a `Settings` field."""
    return _KEYS.get(field, field.replace("_", "-"))


def reread(ctx: click.Context, build: Callable[[dict[str, Any]], Settings]) -> Loaded:
    """The settings read again as at start: the command line's values kept, the environment and the
    `--config` file read anew (by the command's own parsing, so every check applies); `build` makes the
    `Settings` of the option values. Raises ConfigError or click's errors for a bad file or value."""
    path = ctx.meta.get(CONFIG_PATH)
    fresh = ctx.command.make_context(ctx.info_name, ["--config", path] if path else [])
    given = {
        n: v for n, v in ctx.params.items() if ctx.get_parameter_source(n) is ParameterSource.COMMANDLINE
    }
    return Loaded(build({**fresh.params, **given}), tuple(fresh.meta.get(NOTICES, ())))


class Reloader:
    """Runs one reload at a time, on the node, with settings from `load` (`reread` bound to the CLI)."""

    def __init__(self, node: Reconfigurable, load: Callable[[], Loaded], said: tuple[str, ...] = ()) -> None:
        self.node = node
        self.load = load
        self._said = set(said)
        """Notices already logged (at start or by an earlier reload): each is said once."""

    async def reload(self) -> None:
        """Never raises: whatever goes wrong is logged, and the node goes on."""
        logger.info("SIGHUP: reading the configuration again")
        try:
            await self._reload()
        except Exception:
            logger.exception("configuration reload failed; the node keeps running")

    async def _reload(self) -> None:
        try:
            loaded = self.load()
        except (ConfigError, click.ClickException) as exc:
            logger.error(
                "configuration not reloaded, the node keeps running with its current settings: %s. "
                "Fix it and send SIGHUP again.",
                exc.format_message() if isinstance(exc, click.ClickException) else exc,
            )
            return
        for notice in loaded.notices:
            if notice not in self._said:
                self._said.add(notice)
                logger.warning("%s", notice)
        before = self.node.settings
        change = compare(before, loaded.settings)
        if change.applied & LOG_SETTINGS:
            s = change.running
            logsetup.apply(s.log_level, s.log_format, s.node_name)
        if change.applied:
            await self.node.apply_settings(change.running, change.applied)
        _report(before, loaded.settings, change)


def _report(running: Settings, wanted: Settings, change: Change) -> None:
    if not change.applied and not change.needs_restart:
        logger.info("configuration reloaded: nothing changed")
        return
    was, now = describe(running), describe(wanted)
    if change.applied:
        applied = ", ".join(_shown(name, was, now) for name in sorted(change.applied))
        logger.info("configuration reloaded: applied %s", applied)
    if change.needs_restart:
        waiting = ", ".join(_shown(name, was, now) for name in sorted(change.needs_restart))
        logger.warning(
            "configuration reloaded, but these settings take effect only when the node restarts "
            "(it keeps the running value until then): %s",
            waiting,
        )


def _shown(name: str, was: dict[str, Any], now: dict[str, Any]) -> str:
    """`log-level (info -> debug)`; a secret's value is never shown."""
    if was[name] == now[name]:  # a secret (described as "(set)"), or an applied setting shown after the fact
        return f"{config_key(name)} (changed)"
    return f"{config_key(name)} ({was[name]!r} -> {now[name]!r})"
