"""Start-up settings: precedence (flags > environment > config file) and clear errors for bad ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import DKRON_NATS


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DKRON_NATS, *args], capture_output=True, text=True, timeout=30, env={**os.environ, **(env or {})}
    )


def _config(*args: str, env: dict[str, str] | None = None) -> dict[str, object]:
    result = _run("agent", *args, "--print-config", env=env)
    assert result.returncode == 0, result.stderr
    loaded: dict[str, object] = json.loads(result.stdout)
    return loaded


def test_flags_beat_environment_beat_config_file(tmp_path: Path) -> None:
    conf = tmp_path / "dkron.yml"
    conf.write_text("node-name: from-file\nregion: file-region\ndatacenter: file-dc\ntags:\n  role: web\n")
    env = {"DKRON_NATS_REGION": "env-region", "DKRON_NATS_DATACENTER": "env-dc"}
    settings = _config("--config", str(conf), "--datacenter", "flag-dc", env=env)
    assert settings["node_name"] == "from-file"
    assert settings["region"] == "env-region"
    assert settings["datacenter"] == "flag-dc"
    assert settings["tags"] == {"role": "web"}


def test_server_nodes_carry_dkrons_automatic_tags() -> None:
    tags = _config("--server", "--tag", "team=ops")["node_tags"]
    assert isinstance(tags, dict)
    assert tags["server"] == "true"
    assert tags["dkron_server"] == "true"
    assert tags["role"] == "dkron"
    assert tags["team"] == "ops"
    assert {"dc", "region", "version"} <= set(tags)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--http-addr", "nonsense"], "--http-addr"),
        (["--lease-ttl", "0"], "--lease-ttl"),
        (["--starting-deadline", "soon"], "--starting-deadline"),
        (["--tag", "role=web.*"], "tag"),
        (["--tag", "noequals"], "tag"),
        (["--node-name", "bad.name"], "--node-name"),
        (["--log-level", "loud"], "--log-level"),
        (["--no-such-flag"], "--no-such-flag"),
    ],
)
def test_invalid_settings_stop_start_up_naming_the_setting(args: list[str], named: str) -> None:
    result = _run("agent", *args, "--print-config")
    assert result.returncode == 2
    assert named in result.stderr


def test_unknown_config_file_key_is_named(tmp_path: Path) -> None:
    conf = tmp_path / "dkron.yml"
    conf.write_text("node-name: a\nbootstrap-expekt: 3\n")
    result = _run("agent", "--config", str(conf), "--print-config")
    assert result.returncode == 2
    assert "bootstrap-expekt" in result.stderr


def test_invalid_environment_value_is_named() -> None:
    result = _run("agent", "--print-config", env={"DKRON_NATS_LEASE_TTL": "abc"})
    assert result.returncode == 2
    assert "lease-ttl" in result.stderr


def test_completion_scripts_complete_commands_and_options() -> None:
    script = _run("completion", "bash")
    assert script.returncode == 0, script.stderr
    assert "_DKRON_NATS_COMPLETE=bash_complete" in script.stdout
    assert _run("completion", "fish").returncode == 0
    assert _run("completion", "tcsh").returncode == 2

    # What the bash script asks the installed command when the user presses TAB after `dkron-nats jobs ap`.
    program = str(Path(sys.executable).parent / "dkron-nats")
    asked = {"_DKRON_NATS_COMPLETE": "bash_complete", "COMP_WORDS": "dkron-nats jobs ap", "COMP_CWORD": "2"}
    answer = subprocess.run(
        [program], capture_output=True, text=True, timeout=30, env={**os.environ, **asked}
    )
    assert answer.stdout.split() == ["plain,apply"]
    asked["COMP_WORDS"], asked["COMP_CWORD"] = "dkron-nats jobs list -o y", "4"
    answer = subprocess.run(
        [program], capture_output=True, text=True, timeout=30, env={**os.environ, **asked}
    )
    assert answer.stdout.split() == ["plain,yaml"]
