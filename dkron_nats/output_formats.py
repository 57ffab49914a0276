"""`-o json|yaml|table|wide` of the CLI's commands (`--json` stays as the short form of `-o json`).

`table` is the compact view for people, `wide` adds columns, `json` and `yaml` print the API's own data for
scripts; `dkron-nats jobs get NAME -o yaml` is a file `jobs apply -f` takes back.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import click
import yaml

from dkron_nats.apiclient import print_table

F = TypeVar("F", bound=Callable[..., Any])

TABLE, WIDE, JSON, YAML = "table", "wide", "json", "yaml"
FORMATS = (TABLE, WIDE, JSON, YAML)
STRUCTURED = (JSON, YAML)


def output_option(command: F) -> F:
    """`-o/--output FORMAT` and `--json`, given to the command as one `output: str`."""

    @functools.wraps(command)
    def with_output(*args: Any, output: str | None, as_json: bool, **kwargs: Any) -> Any:
        if as_json and output not in (None, JSON):
            raise click.UsageError(f"--json means -o json; drop one of --json and -o {output}")
        return command(*args, output=JSON if as_json else output or TABLE, **kwargs)

    with_json = click.option("--json", "as_json", is_flag=True, help="Print JSON: the same as -o json.")(
        with_output
    )
    return click.option(  # type: ignore[return-value]
        "-o",
        "--output",
        type=click.Choice(FORMATS),
        default=None,
        help="table (default), wide (more columns), json or yaml.",
    )(with_json)


def is_structured(output: str) -> bool:
    return output in STRUCTURED


def print_structured(data: Any, output: str) -> None:
    """JSON on one line, or YAML in the API's key order."""
    if output == YAML:
        click.echo(
            yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False), nl=False
        )
    else:
        click.echo(json.dumps(data))


def show(
    output: str,
    data: Any,
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    wide_columns: Sequence[str] | None = None,
) -> None:
    """`data` as JSON or YAML, else `rows` as a table of `columns` (`wide`: of `wide_columns`)."""
    if is_structured(output):
        print_structured(data, output)
    else:
        print_table(rows, wide_columns if output == WIDE and wide_columns else columns)
