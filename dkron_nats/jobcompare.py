"""Is a job in a file the job the server stores? Field by field, with every field the file leaves out at the
server's default, so `jobs apply` is declarative: a key removed from the file is a change back to the default.

Both sides go through the server's own parsing and validation (`dkron_nats.jobinput`): the file's job as the
server would store it (`concurrency` "allow", the keys of `retry_backoff` left out at theirs...), and the
stored job as the server would read it back. So equal jobs compare equal whatever their spelling: an absent
map or an empty one, a time in another offset, `"default"` DST rules.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec

from dkron_nats.errors import DkronError
from dkron_nats.jobfiles import key_path
from dkron_nats.jobinput import ValidatedJob, decode_job, validate_job

STATE_FIELDS = frozenset(
    {"success_count", "error_count", "last_success", "last_error", "status", "dependent_jobs", "next"}
)
"""What the cluster computes: kept by the server on every write, so never part of the comparison."""
COMPARED = tuple(f for f in ValidatedJob.__struct_fields__ if f not in STATE_FIELDS)
UNSET = "(unset)"


@dataclass(frozen=True)
class Difference:
    """One key whose stored value is not the wanted one; `path` is `retries` or `executor_config.shell`,
    and None a key that is not there (unset)."""

    path: str
    stored: Any
    wanted: Any

    def as_json(self) -> dict[str, Any]:
        return {"path": self.path, "stored": self.stored, "wanted": self.wanted}


def diff_line(change: Mapping[str, Any]) -> str:
    """`retries: 2 -> 0`, `executor_config.shell: "true" -> (unset)`."""
    old, new = (UNSET if v is None else json.dumps(v) for v in (change["stored"], change["wanted"]))
    return f"{change['path']}: {old} -> {new}"


def as_stored(job: Mapping[str, Any]) -> dict[str, Any]:
    """The job as the server would store it: every compared field, the absent ones at their defaults.

    Raises DkronError with the server's own message when the server would refuse the job.
    """
    validated = validate_job(decode_job(msgspec.json.encode(dict(job))), _any_executor)
    return {field: _plain(getattr(validated, field)) for field in COMPARED}


def stored_or_nothing(job: Mapping[str, Any]) -> dict[str, Any]:
    """What the server answered, read as `as_stored` reads a file; {} if it cannot be read (then every
    wanted field counts as changed and the job is written again)."""
    try:
        return as_stored(job)
    except DkronError:
        return {}


def _any_executor(name: str, config: dict[str, str]) -> None:
    """Plugins check their config on the server; here only what a job is, not what it runs, matters."""


def _plain(value: Any) -> Any:
    """JSON-like data where equal means the same job: times in UTC, and an empty map or list as None."""
    if isinstance(value, datetime):
        value = value.astimezone(UTC)
    plain = msgspec.to_builtins(value)
    return None if plain in ({}, [], None) else plain


def differences(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[Difference]:
    """Every key that differs, in the job's field order; maps are compared key by key."""
    found: list[Difference] = []
    for field in COMPARED:
        _compare(field, stored.get(field), wanted.get(field), found)
    return found


def changed_fields(found: list[Difference]) -> list[str]:
    """The top-level fields the differences are in, once each, in order."""
    return list(dict.fromkeys(d.path.split(".")[0].split("[")[0] for d in found))


def _compare(path: str, old: Any, new: Any, found: list[Difference]) -> None:
    if old == new:
        return
    if isinstance(old, dict | None) and isinstance(new, dict | None):
        old, new = old or {}, new or {}
        for key in dict.fromkeys([*old, *new]):
            _compare(path + key_path(key), old.get(key), new.get(key), found)
        return
    found.append(Difference(path, old, new))
