"""Parsing and validating a job as a Dkron client posts it.

Decoding follows Go's encoding/json where clients rely on it: unknown fields are ignored, `null` leaves a
field at its zero value, and maps must hold strings. Validation follows Dkron's order and messages.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Annotated

import msgspec

from dkron_nats.durations import parse_duration
from dkron_nats.errors import PayloadError, ValidationError
from dkron_nats.misfire import DEFAULT_MISFIRE_MAX, DEFAULT_POLICY, MISFIRE_POLICIES
from dkron_nats.models import DEPENDENCY_CONDITIONS, Dependency, DstPolicy, JobSpec, Parameter, RetryBackoff
from dkron_nats.names import is_token, job_name_error
from dkron_nats.parameters import ParameterInput, parse_parameters
from dkron_nats.schedule import (
    DST_GAP_POLICIES,
    DST_OVERLAP_POLICIES,
    ScheduleError,
    TimezoneError,
    parse_schedule,
    validate_timezone,
)
from dkron_nats.timefmt import parse_time, utcnow

CONCURRENCY_POLICIES = ("allow", "forbid", "replace")
NOTIFY_ON = ("always", "failure", "recovery", "failure_and_recovery")
"""When a job's launches notify (mail, webhook): `recovery` is a success after a launch that failed."""
MISFIRE_MAX_LIMIT = 100
HISTORY_LIMIT_MAX = 100_000
PATH_KEYS = ("cwd", "log_dir")
"""Config keys that name a directory (the shell executor's, the files processor's), in any plugin."""

# Go's field types bound the numbers Dkron accepts (counters are int64; retries, a uint64, is held to the
# int64 range, which msgspec can check).
Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]


class JobInput(msgspec.Struct, kw_only=True):
    name: str | None = None
    displayname: str | None = None
    timezone: str | None = None
    schedule: str | None = None
    owner: str | None = None
    owner_email: str | None = None
    success_count: Int64 | None = None
    error_count: Int64 | None = None
    last_success: str | None = None
    last_error: str | None = None
    disabled: bool | None = None
    tags: dict[str, str] | None = None
    metadata: dict[str, str] | None = None
    retries: Int64 | None = None
    dependent_jobs: list[str] | None = None
    parent_job: str | None = None
    processors: dict[str, dict[str, str]] | None = None
    concurrency: str | None = None
    executor: str | None = None
    executor_config: dict[str, str] | None = None
    status: str | None = None
    next: str | None = None
    ephemeral: bool | None = None
    starts_at: str | None = None
    expires_at: str | None = None
    misfire_policy: str | None = None
    starting_deadline: str | None = None
    misfire_max: Int64 | None = None
    retry_backoff: RetryBackoff | None = None
    retry_on_other_node: bool | None = None
    depends_on: list[Dependency] | None = None
    history_limit: Int64 | None = None
    history_max_age: str | None = None
    dst_policy: DstPolicy | None = None
    notify_on: str | None = None
    parameters: list[str | ParameterInput] | None = None


_decoder = msgspec.json.Decoder(JobInput)
_list_decoder = msgspec.json.Decoder(list[JobInput])


TOO_DEEP = "the JSON is nested too deeply; a job is an object a few levels deep"


def decode_job(body: bytes) -> JobInput:
    try:
        return _decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise PayloadError(_describe(exc)) from None
    except RecursionError:  # msgspec's answer to deep nesting, even inside an ignored field
        raise PayloadError(TOO_DEEP) from None
    except UnicodeDecodeError as exc:  # raised as it is by msgspec for a bad byte inside a string
        raise PayloadError(_not_utf8(exc)) from None


def decode_job_list(body: bytes) -> list[JobInput]:
    try:
        return _list_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise PayloadError(_describe(exc)) from None
    except RecursionError:
        raise PayloadError(TOO_DEEP) from None
    except UnicodeDecodeError as exc:
        raise PayloadError(_not_utf8(exc)) from None


def _not_utf8(exc: UnicodeDecodeError) -> str:
    return f"the body is not UTF-8 (a string holds the byte {exc.object[exc.start]:#04x}); send UTF-8 JSON"


def _describe(exc: msgspec.DecodeError) -> str:
    text = str(exc)
    if text.startswith("Input data was truncated"):
        return "the body is empty or cut short, send a whole JSON job object"
    return text


def _time_field(name: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError as exc:
        raise PayloadError(f"invalid time in field {name}: {exc}") from None


def validate_tags(tags: dict[str, str] | None) -> None:
    """Target tags are `key: value[:count]`; keys and values must be safe NATS tokens."""
    for key, raw in (tags or {}).items():
        value, sep, count = raw.partition(":")
        if not is_token(key):
            raise ValidationError(f"tag key {key!r} may only contain letters, digits, '_' and '-'")
        if not is_token(value):
            raise ValidationError(
                f"tag {key!r} has value {value!r}: only letters, digits, '_' and '-' are allowed"
            )
        if sep and not (count.isdigit() and len(count) < 7):
            raise ValidationError(f"tag {key!r} has count {count!r}: the count must be a whole number")


def validate_metadata(metadata: dict[str, str] | None) -> None:
    """Metadata is free text, but one line of it: a CR, LF or other control character can only forge
    lines where it is shown (logs, headers, notifications)."""
    for key, value in (metadata or {}).items():
        if _has_control(key):
            raise ValidationError(f"metadata key {key!r} contains a control character: remove it", "metadata")
        if _has_control(value):
            raise ValidationError(
                f"metadata {key!r} has a value with a control character (such as a line break): remove it",
                f"metadata.{key}",
            )


def _has_control(text: str) -> bool:
    return any(ord(ch) < 32 or 127 <= ord(ch) < 160 for ch in text)


def _duration_field(field: str, value: str | None, example: str, minimum: timedelta = timedelta(0)) -> str:
    """A duration field as written ("" when unset), refused unless it parses and is long enough."""
    text = (value or "").strip()
    if not text:
        return ""
    try:
        duration = parse_duration(text)
    except ValueError as exc:
        raise ValidationError(f"invalid {field}: {exc}") from None
    if duration <= timedelta(0) or duration < minimum:
        shortest = f"at least {minimum.total_seconds():g}s" if minimum else "a positive duration"
        raise ValidationError(f'{field} must be {shortest}, such as "{example}"')
    return text


def _normalized_dst(policy: DstPolicy | None) -> DstPolicy:
    """ "default" (what GET answers for an unset rule) means the same as leaving it out."""
    policy = policy or DstPolicy()
    return DstPolicy(
        gap="" if policy.gap == "default" else policy.gap,
        overlap="" if policy.overlap == "default" else policy.overlap,
    )


def _validate_dependencies(name: str, dependencies: list[Dependency] | None) -> None:
    """The entries themselves; that the parents exist and form no cycle is checked when saving."""
    seen: set[str] = set()
    for i, dep in enumerate(dependencies or []):
        if dep.on not in DEPENDENCY_CONDITIONS:
            raise ValidationError(
                f'invalid depends_on[{i}].on "{dep.on}": use "success", "failure" or "always"'
            )
        if dep.job == name:
            raise ValidationError("a job cannot depend on itself (depends_on)")
        if dep.job in seen:
            raise ValidationError(f"depends_on names {dep.job} twice")
        seen.add(dep.job)


def _validate_backoff(backoff: RetryBackoff | None) -> None:
    if backoff is None:
        return
    durations = {}
    for field in ("initial", "max"):
        text = _duration_field(f"retry_backoff.{field}", getattr(backoff, field), "1s") or "0s"
        durations[field] = parse_duration(text)
        if not durations[field]:
            raise ValidationError(f'retry_backoff.{field} must be a positive duration, such as "1s"')
    if durations["initial"] > durations["max"]:
        raise ValidationError("retry_backoff.initial must not be longer than retry_backoff.max")
    if not 1 <= backoff.multiplier <= 100:
        raise ValidationError("retry_backoff.multiplier must be between 1 (a fixed delay) and 100")


def _validate_plugin_name(field: str, name: str) -> None:
    """Plugin names are entry point names: a dot, a wildcard or a space can only be a mistake or a probe."""
    if not is_token(name):
        raise ValidationError(
            f"{field} {name!r} is not a plugin name: use up to 64 letters, digits, '_' and '-'"
        )


def _validate_paths(field: str, config: dict[str, str] | None) -> None:
    """Directories are given as themselves: no NUL, and no `..` that climbs out of what they name."""
    for key in PATH_KEYS:
        path = (config or {}).get(key, "")
        if "\0" in path:
            raise ValidationError(f"{field}.{key} contains a NUL character: give a plain directory path")
        if ".." in path.split("/"):
            raise ValidationError(
                f'{field}.{key} "{path}" climbs up with "..": give the directory itself, e.g. /var/log/dkron'
            )


def _validate_plugins(inp: JobInput) -> None:
    """The executor's and processors' names and directories; their own rules are checked by the plugin."""
    if inp.executor:
        _validate_plugin_name("executor", inp.executor)
    _validate_paths("executor_config", inp.executor_config)
    for processor, config in (inp.processors or {}).items():
        _validate_plugin_name("processor", processor)
        _validate_paths(f"processors.{processor}", config)


class ValidatedJob(msgspec.Struct, kw_only=True):
    """A job that passed validation, with the counters and times the client sent along."""

    name: str
    displayname: str
    timezone: str
    schedule: str
    owner: str
    owner_email: str
    disabled: bool
    tags: dict[str, str] | None
    metadata: dict[str, str] | None
    retries: int
    parent_job: str
    processors: dict[str, dict[str, str]] | None
    concurrency: str
    executor: str
    executor_config: dict[str, str] | None
    ephemeral: bool
    starts_at: datetime | None
    expires_at: datetime | None
    misfire_policy: str
    starting_deadline: str
    misfire_max: int
    retry_backoff: RetryBackoff | None
    retry_on_other_node: bool
    depends_on: list[Dependency] | None
    history_limit: int
    history_max_age: str
    dst_policy: DstPolicy | None
    notify_on: str
    parameters: list[Parameter] | None
    success_count: int
    error_count: int
    last_success: datetime | None
    last_error: datetime | None
    status: str
    dependent_jobs: list[str] | None
    next: datetime | None


def validate_job(
    inp: JobInput,
    validate_executor: Callable[[str, dict[str, str]], None],
    validate_processor: Callable[[str, dict[str, str]], None] | None = None,
) -> ValidatedJob:
    """Apply Dkron's rules in Dkron's order; raise ValidationError or PayloadError."""
    name = inp.name or ""
    error = job_name_error(name)
    if error:
        raise ValidationError(error)
    parent = inp.parent_job or ""
    if parent == name:
        raise ValidationError("the job can not have itself as parent")
    schedule = inp.schedule or ""
    timezone = inp.timezone or ""
    dst = _normalized_dst(inp.dst_policy)
    if dst.gap not in ("", *DST_GAP_POLICIES):
        raise ValidationError(f'invalid dst_policy.gap "{dst.gap}": use "run_at_transition" or "skip"')
    if dst.overlap not in ("", *DST_OVERLAP_POLICIES):
        raise ValidationError(f'invalid dst_policy.overlap "{dst.overlap}": use "once" or "twice"')
    try:
        validate_timezone(timezone)
        if schedule or not (parent or inp.depends_on):
            parse_schedule(schedule, job_name=name, timezone=timezone, anchor=utcnow())
    except TimezoneError as exc:
        raise ValidationError(str(exc)) from None
    except ScheduleError as exc:
        raise ValidationError(str(exc)) from None
    concurrency = "allow" if inp.concurrency is None else inp.concurrency
    if concurrency not in (*CONCURRENCY_POLICIES, ""):
        raise ValidationError('invalid concurrency policy value, use "allow", "forbid" or "replace"')
    retries = inp.retries or 0
    if retries < 0:
        raise ValidationError("retries must be zero or more")
    validate_tags(inp.tags)
    validate_metadata(inp.metadata)
    parameters = parse_parameters(inp.parameters)
    misfire_policy = inp.misfire_policy or DEFAULT_POLICY
    if misfire_policy not in MISFIRE_POLICIES:
        raise ValidationError(
            f'invalid misfire_policy "{misfire_policy}": use "skip", "run_once" or "run_all"'
        )
    starting_deadline = _duration_field("starting_deadline", inp.starting_deadline, "5m")
    misfire_max = DEFAULT_MISFIRE_MAX if inp.misfire_max is None else inp.misfire_max
    if not 1 <= misfire_max <= MISFIRE_MAX_LIMIT:
        raise ValidationError(f"misfire_max must be between 1 and {MISFIRE_MAX_LIMIT}")
    _validate_backoff(inp.retry_backoff)
    _validate_dependencies(name, inp.depends_on)
    history_limit = inp.history_limit or 0
    if not 0 <= history_limit <= HISTORY_LIMIT_MAX:
        raise ValidationError(
            f"history_limit must be between 1 and {HISTORY_LIMIT_MAX} (0: the server's default)"
        )
    history_max_age = _duration_field("history_max_age", inp.history_max_age, "720h", timedelta(seconds=1))
    notify_on = inp.notify_on or "always"
    if notify_on not in NOTIFY_ON:
        raise ValidationError(
            f'invalid notify_on "{notify_on}": use "always", "failure", "recovery" or "failure_and_recovery"'
        )
    _validate_plugins(inp)
    executor = inp.executor or ""
    if executor:
        try:
            validate_executor(executor, inp.executor_config or {})
        except ValueError as exc:
            raise ValidationError(str(exc), _config_field(exc, inp.executor_config or {})) from None
    for processor, config in (inp.processors or {}).items():
        try:
            if validate_processor is not None:
                validate_processor(processor, config)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
    return ValidatedJob(
        name=name,
        displayname=inp.displayname or "",
        timezone=timezone,
        schedule=schedule,
        owner=inp.owner or "",
        owner_email=inp.owner_email or "",
        disabled=bool(inp.disabled),
        tags=inp.tags,
        metadata=inp.metadata,
        retries=retries,
        parent_job=parent,
        processors=inp.processors,
        concurrency=concurrency,
        executor=executor,
        executor_config=inp.executor_config,
        ephemeral=bool(inp.ephemeral),
        starts_at=_time_field("starts_at", inp.starts_at),
        expires_at=_time_field("expires_at", inp.expires_at),
        misfire_policy=misfire_policy,
        starting_deadline=starting_deadline,
        misfire_max=misfire_max,
        retry_backoff=inp.retry_backoff,
        retry_on_other_node=bool(inp.retry_on_other_node),
        depends_on=inp.depends_on or None,
        history_limit=history_limit,
        history_max_age=history_max_age,
        dst_policy=dst if dst.gap or dst.overlap else None,
        notify_on=notify_on,
        parameters=parameters,
        success_count=inp.success_count or 0,
        error_count=inp.error_count or 0,
        last_success=_time_field("last_success", inp.last_success),
        last_error=_time_field("last_error", inp.last_error),
        status=inp.status or "",
        dependent_jobs=inp.dependent_jobs,
        next=_time_field("next", inp.next),
    )


_FIELD_ALIASES = {"parent job": "parent_job", "parent": "parent_job", "tag": "tags"}
_JOB_FIELDS = [f for f in JobSpec.__struct_fields__ if f not in ("anchor",)]
_FIELD_NAMED = re.compile(
    r"\b(" + "|".join(sorted([*_JOB_FIELDS, *_FIELD_ALIASES], key=len, reverse=True)) + r")((?:\.\w+)*)\b"
)


def error_field(detail: str) -> str | None:
    """The job field a validation message is about (the first it names), e.g. `retry_backoff.initial`,
    so a form can show the message beside that field; None if it names none."""
    found = _FIELD_NAMED.search(detail)
    if found is None:
        return None
    return _FIELD_ALIASES.get(found.group(1), found.group(1)) + found.group(2)


def _config_field(exc: ValueError, config: dict[str, str]) -> str:
    """`executor_config.<key>` for an executor's refusal: the key it names, else the first key of the
    config its message mentions; `executor_config` when it names none."""
    key = getattr(exc, "key", "")
    if not key:
        text = str(exc).lower()
        found = [(m.start(), k) for k in config if (m := re.search(rf"\b{re.escape(k.lower())}\b", text))]
        key = min(found)[1] if found else ""
    return f"executor_config.{key}" if key else "executor_config"
