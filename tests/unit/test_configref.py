"""docs/configuration.md is generated from the CLI's options: it must be current and cover every flag."""

from __future__ import annotations

from pathlib import Path

import click

from dkron_nats import configref
from dkron_nats.cli import agent

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_the_configuration_reference_is_current() -> None:
    assert REFERENCE.read_text() == configref.render(), (
        "docs/configuration.md is stale: run `python -m dkron_nats.configref > docs/configuration.md`"
    )


def test_every_agent_flag_is_listed_with_its_environment_variable_and_an_explanation() -> None:
    text = configref.render()
    for param in agent.params:
        assert isinstance(param, click.Option)
        assert f"`{param.opts[0]}`" in text
        if param.name != "print_config":
            assert f"`{param.envvar}`" in text
        assert param.help, f"{param.opts[0]} has no help text, so the reference cannot explain it"
