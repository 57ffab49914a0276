"""The environment a job's process starts from: a short documented base, never the agent's own.

`PATH`, `HOME`, `LANG`, `TZ`, `USER` and `SHELL` are taken from the agent's environment when it has them
(`PATH` has a default), plus the names the operator lists with `--job-env-passthrough`. With `su`, `HOME`,
`USER` and `SHELL` come from the target user's passwd entry instead. dkron-nats's own variables
(`DKRON_NATS_*`: the bootstrap token, NATS and mail credentials) are never passed, whatever the list says.
The job's own `env`, a run's parameters and the execution variables are added on top by the executor.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterable, Mapping

from dkron_nats.parameters import RESERVED_PREFIX, variable_name_error

BASE_NAMES = ("PATH", "HOME", "LANG", "TZ", "USER", "SHELL")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_ACCOUNT_NAMES = ("HOME", "USER", "SHELL")


def passthrough_error(name: str) -> str | None:
    """Why `name` cannot be passed through to jobs (`--job-env-passthrough`), or None."""
    error = variable_name_error(name)
    if error is None:
        return None
    if name.upper().startswith(RESERVED_PREFIX):
        return f"{name} is never passed to jobs: {RESERVED_PREFIX}* hold dkron-nats's own secrets"
    return error


def base_environment(
    passthrough: Iterable[str] = (), source: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The base names and the passed-through ones that `source` (the agent's environment) has."""
    source = os.environ if source is None else source
    names = [*BASE_NAMES, *passthrough]
    env = {name: source[name] for name in names if name in source and passthrough_error(name) is None}
    env.setdefault("PATH", DEFAULT_PATH)
    return env


def as_account(env: Mapping[str, str], account: pwd.struct_passwd | None, uid: int) -> dict[str, str]:
    """`env` for a job run as another user: its own HOME, USER and SHELL, none of the agent's.

    A numeric uid without a passwd entry gets `/` as HOME, the uid as USER and `/bin/sh`."""
    changed = {k: v for k, v in env.items() if k not in _ACCOUNT_NAMES}
    if account is None:
        return {**changed, "HOME": "/", "USER": str(uid), "SHELL": "/bin/sh"}
    return {
        **changed,
        "HOME": account.pw_dir or "/",
        "USER": account.pw_name,
        "SHELL": account.pw_shell or "/bin/sh",
    }
