"""Job parameters: the only environment variables a run may set.

A job lists them in `parameters` (`[{"name": "DATE", "secret": false}]`, or `["DATE"]` for short); a NATS
trigger's `env` and the `env` of `POST /v1/jobs/{job}/run` may set those names and no other. Without the
list a trigger could set `BASH_ENV`, `LD_PRELOAD` or `PATH` and run its own code inside the job.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import msgspec

from dkron_nats.errors import ValidationError
from dkron_nats.models import JobSpec, Parameter
from dkron_nats.secrets import MASK, is_secret_key

RESERVED_PREFIX = "DKRON_NATS_"
"""dkron-nats's own settings and credentials: never a job's variables."""
EXECUTION_VARIABLES = frozenset(
    {
        "ENV_JOB_NAME",
        "DKRON_JOB_NAME",
        "DKRON_EXECUTION_ID",
        "DKRON_ATTEMPT",
        "DKRON_NODE",
        "DKRON_SCHEDULED_TIME",
        "TRACEPARENT",
    }
)
"""Set by the agent for every execution: a run may not pass another execution off as its own."""
MAX_PARAMETERS = 64
MAX_NAME = 128
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ParameterInput(msgspec.Struct, kw_only=True):
    """A parameter as a client posts it (`null` leaves a field at its zero value, as for the job)."""

    name: str | None = None
    secret: bool | None = None


def variable_name_error(name: str) -> str | None:
    """Why `name` cannot be a variable a job is given from outside, or None."""
    if not _NAME.fullmatch(name) or len(name) > MAX_NAME:
        return (
            f"{name!r} is not a variable name: use letters, digits and '_', not starting with a digit "
            f"(at most {MAX_NAME})"
        )
    if name.upper().startswith(RESERVED_PREFIX):
        return (
            f"{name} is reserved: {RESERVED_PREFIX}* variables are dkron-nats's own settings and credentials"
        )
    return None


def parse_parameters(items: Sequence[str | ParameterInput] | None) -> list[Parameter] | None:
    """The declared parameters, or ValidationError naming the entry at fault; None when there are none."""
    if not items:
        return None
    if len(items) > MAX_PARAMETERS:
        raise ValidationError(
            f"parameters holds {len(items)} entries; at most {MAX_PARAMETERS}", "parameters"
        )
    found: list[Parameter] = []
    for i, item in enumerate(items):
        field = f"parameters[{i}]"
        parameter = _parameter(item, field)
        error = variable_name_error(parameter.name)
        if error is None and parameter.name in EXECUTION_VARIABLES:
            error = f"{parameter.name} is set by the agent for every execution"
        if error is None and any(p.name == parameter.name for p in found):
            error = f"{parameter.name} is listed twice"
        if error is not None:
            raise ValidationError(f"invalid {field}: {error}", field)
        found.append(parameter)
    return found


def _parameter(item: str | ParameterInput, field: str) -> Parameter:
    if isinstance(item, str):
        return Parameter(name=item)
    if not item.name:
        raise ValidationError(
            f'{field} has no name: give {{"name": "DATE", "secret": false}} or "DATE"', field
        )
    return Parameter(name=item.name, secret=bool(item.secret))


def run_env_error(job: JobSpec, env: Mapping[str, str]) -> tuple[str, str] | None:
    """Why a run of `job` may not set `env`, and the variable at fault; None when it may."""
    declared = {p.name for p in job.parameters or ()}
    for name, value in env.items():
        if name not in declared:
            return (
                f"env {name} is not a parameter of job {job.name}; declare it in the job's parameters",
                name,
            )
        if "\0" in value:
            return f"env {name} contains a NUL character: remove it", name
    return None


def masked_env(job: JobSpec, env: Mapping[str, str]) -> dict[str, str]:
    """A run's `env` for the audit log: the values of secret parameters (or secret-looking names) masked."""
    secret = {p.name for p in job.parameters or () if p.secret}
    return {name: MASK if name in secret or is_secret_key(name) else value for name, value in env.items()}


def parameters_json(job_parameters: Sequence[Parameter] | None) -> list[dict[str, object]]:
    """The API's shape: always objects, always both fields."""
    return [{"name": p.name, "secret": p.secret} for p in job_parameters or ()]
