"""The CLI commands about the cluster itself: members, leader, pause/unpause, and shell completion."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click
from click.shell_completion import get_completion_class

from dkron_nats.apiclient import Api, api_options
from dkron_nats.output_formats import is_structured, output_option, print_structured, show

PROG_NAME = "dkron-nats"
COMPLETE_VAR = "_DKRON_NATS_COMPLETE"
"""The variable click's completion scripts set when they ask `dkron-nats` for candidates."""
AUTOMATIC_TAGS = ("role", "dc", "region", "version", "server", "dkron_server")
"""Tags every node carries (Dkron's): their own columns, not the TAGS one."""
MEMBER_COLUMNS = ("name", "addr", "port", "status", "server", "tags")
MEMBER_WIDE_COLUMNS = ("name", "addr", "port", "status", "server", "dc", "region", "version", "tags")


def _member_row(member: Mapping[str, Any]) -> dict[str, Any]:
    tags = member.get("Tags") or {}
    return {
        "name": member.get("Name"),
        "addr": member.get("Addr"),
        "port": member.get("Port"),
        "status": member.get("statusText", "alive"),
        "server": tags.get("server", "false"),
        "dc": tags.get("dc", ""),
        "region": tags.get("region", ""),
        "version": tags.get("version", ""),
        "tags": {k: v for k, v in tags.items() if k not in AUTOMATIC_TAGS},
    }


@click.command()
@api_options
@output_option
def members(api: Api, output: str) -> None:
    """The cluster's nodes: servers and agents, alive or failed (TAGS: the user's own tags)."""
    found = api.call("GET", "/v1/members")
    show(output, found, [_member_row(m) for m in found], MEMBER_COLUMNS, MEMBER_WIDE_COLUMNS)


@click.command()
@api_options
@output_option
def leader(api: Api, output: str) -> None:
    """The server that leads (runs the scheduler) now; exit 1 while there is none."""
    found = api.call("GET", "/v1/leader")
    show(output, found, [_member_row(found)], MEMBER_COLUMNS, MEMBER_WIDE_COLUMNS)


SCHEDULING_HELP = "Scheduling (persisted, cluster-wide) instead of job submissions (Dkron's pause)."


@click.command()
@click.option("--scheduling", is_flag=True, help=SCHEDULING_HELP)
@api_options
@output_option
def pause(scheduling: bool, api: Api, output: str) -> None:
    """Pause job submissions (new jobs and updates get 503), or with --scheduling the scheduler."""
    _set_paused(api, "/v1/pause", scheduling, output)


@click.command()
@click.option("--scheduling", is_flag=True, help=SCHEDULING_HELP)
@api_options
@output_option
def unpause(scheduling: bool, api: Api, output: str) -> None:
    """Lift a pause of submissions, or with --scheduling of the scheduler."""
    _set_paused(api, "/v1/unpause", scheduling, output)


def _set_paused(api: Api, path: str, scheduling: bool, output: str) -> None:
    state = api.call("POST", path, params={"scheduling": "true"} if scheduling else {})
    if is_structured(output):
        print_structured(state, output)
        return
    click.echo(f"submissions: {'paused' if state.get('paused') else 'accepted'}")
    if "scheduling_paused" in state:
        click.echo(f"scheduling: {'paused' if state['scheduling_paused'] else 'running'}")


@click.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the shell completion script for SHELL.

    \b
    bash: eval "$(dkron-nats completion bash)"  (in ~/.bashrc)
    zsh:  eval "$(dkron-nats completion zsh)"   (in ~/.zshrc)
    fish: dkron-nats completion fish > ~/.config/fish/completions/dkron-nats.fish
    """
    script_class = get_completion_class(shell)
    if script_class is None:  # click knows all three; a click without one is a broken install
        raise click.ClickException(f"this click has no {shell} completion")
    root = ctx.find_root().command
    click.echo(script_class(root, {}, PROG_NAME, COMPLETE_VAR).source())


CLUSTER_COMMANDS: list[click.Command] = [members, leader, pause, unpause, completion]
