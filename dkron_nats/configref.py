"""The configuration reference (`docs/configuration.md`), generated from the CLI's own option definitions.

`python -m dkron_nats.configref > docs/configuration.md` writes it; a test fails when the file is stale, so
the reference cannot drift from the code. Every `agent` flag is listed with its environment variable, its
config-file key and its default; the API commands' shared options follow.
"""

from __future__ import annotations

from collections.abc import Iterable

import click

from dkron_nats import dkronconfig
from dkron_nats.cli import agent, main
from dkron_nats.reload import APPLIED_AT_RUN_TIME, config_key

HEADER = """# Configuration reference

Generated from the code by `python -m dkron_nats.configref` (a test fails when this file is stale).

`dkron-nats agent` takes every setting three ways; a flag wins over the environment, which wins over the file:

- a flag, e.g. `--node-name web1`;
- an environment variable: `DKRON_NATS_` and the flag's name in capitals, `DKRON_NATS_NODE_NAME=web1`;
- a key in the YAML, JSON or TOML file given with `--config`: the flag's name, `node-name: web1` (`tags` may
  be a map: `tags: {role: web}`).

A repeatable flag takes several values (`--tag a=1 --tag b=2`); in the environment they are separated by
spaces, in a file they form a list. A file key that is neither an option here nor one of Dkron's is refused,
with the closest known key ("did you mean").

Dkron's own configuration works too (see "Dkron's settings" below): a `dkron.yml` given with `--config`, and
Dkron's `DKRON_` variables (`DKRON_NODE_NAME=web1`), which rank below `DKRON_NATS_` ones and above the file.
"""


def _default(param: click.Parameter) -> str:
    default = param.default
    if callable(default) or default is None or type(default).__name__ == "Sentinel":
        return ""
    if isinstance(param, click.Option) and param.is_flag:
        return "on" if default else "off"
    if isinstance(default, list | tuple):
        return ", ".join(str(v) for v in default)
    return str(default)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _rows(params: Iterable[click.Parameter], file_keys: bool = True) -> list[str]:
    header = ["Flag", "Environment", *(["File key"] if file_keys else []), "Default", "Meaning"]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for param in params:
        if not isinstance(param, click.Option) or param.hidden:
            continue
        flag = ", ".join(f"`{opt}`" for opt in param.opts) + (" (repeatable)" if param.multiple else "")
        env = f"`{param.envvar}`" if isinstance(param.envvar, str) else ""
        in_file = param.name not in ("config", "print_config")
        key = f"`{param.opts[0].removeprefix('--')}`" if in_file else ""
        default = _default(param) or (param.show_default if isinstance(param.show_default, str) else "")
        shown = f"`{default}`" if default else ""
        cells = [flag, env, *([key] if file_keys else []), shown, param.help or ""]
        rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return rows


def _api_commands() -> list[str]:
    lines = ["## API commands", ""]
    lines.append(
        "`token`, `jobs`, `executions`, `members`, `leader`, `pause`, `unpause` and `import` talk to a "
        "running server's API (`docs/cli.md`). Their shared options:"
    )
    lines.append("")
    group = main.commands["jobs"]
    sample = group.commands["list"] if isinstance(group, click.Group) else group
    shared = [p for p in sample.params if p.name in ("server_url", "token", "as_json")]
    lines += _rows(shared, file_keys=False)
    return lines


def _reload() -> list[str]:
    keys = ", ".join(f"`{config_key(name)}`" for name in sorted(APPLIED_AT_RUN_TIME))
    text = (
        "`kill -HUP <pid>` (or `systemctl reload`) reads the settings again: the flags the node was started "
        "with still win, the environment and the `--config` file are read anew. These take effect at once "
        f"(new tags reach `/v1/members`, and so job targeting, right away): {keys}. Any other setting that "
        "changed is named in the log as waiting for a restart, and keeps its running value. A file that "
        "cannot be read or holds a bad value changes nothing: the log says what is wrong. SIGHUP never "
        "stops the node."
    )
    return ["## Changing settings while the node runs (SIGHUP)", "", text]


def _dkron_keys() -> list[str]:
    intro = (
        "Keys of a Dkron `dkron.yml` and their `DKRON_` variables. A key without a meaning here is named "
        "once in the log (`--print-config`: on stderr) as ignored, with the reason; it never stops the node."
    )
    lines = ["## Dkron's settings", "", intro, "", "| Dkron key | Here |", "|---|---|"]
    for key in sorted(dkronconfig.DKRON_KEYS):
        if key in dkronconfig.SAME_MEANING:
            here = f"`--{key}`, the same"
        elif key in dkronconfig.RENAMED:
            here = f"`--{dkronconfig.RENAMED[key]}` (Dkron's older name of it)"
        else:
            here = f"ignored: {dkronconfig.IGNORED[key]}"
        lines.append(f"| `{key}` | {_cell(here)} |")
    return lines


def render() -> str:
    lines = [
        HEADER,
        "## `dkron-nats agent`",
        "",
        *_rows(agent.params),
        "",
        *_reload(),
        "",
        *_dkron_keys(),
        "",
        *_api_commands(),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    print(render(), end="")  # noqa: T201
