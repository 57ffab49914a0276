"""A Dkron install's settings work as they are: its `dkron.yml` and its `DKRON_*` variables. Keys with a
meaning here are read, the others are named once as ignored, and typos of our own keys are still refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from dkron_nats.cli import agent

# As /etc/dkron/dkron.yml of a Dkron 3 server, from Dkron's sample file and documented flags.
DKRON_YML = """\
server: true
bootstrap-expect: 3
data-dir: /var/lib/dkron
log-level: debug
node-name: dkron-1
datacenter: eu-west-1a
region: eu-west
bind-addr: "{{ GetPrivateIP }}:8946"
http-addr: 127.0.0.1:8080
rpc-port: 6868
encrypt: V2hhdCBhIGdvc3NpcCBrZXk=
retry-join:
  - provider=aws region=eu-west-1 tag_key=dkron tag_value=server
  - 10.0.1.12
raft-multiplier: 1
ui: true
enable-prometheus: true
tags:
  role: scheduler
  zone: a
webhook-url: https://hooks.example.com/services/T000/B000/XXXX
webhook-payload: '{"text": "{{.JobName}} finished: {{.Success}}"}'
webhook-headers: Content-Type:application/json
mail-host: email-smtp.eu-west-1.amazonaws.com
mail-port: 587
mail-username: mailuser
mail-password: mailpassword
mail-from: cron@example.com
mail-subject-prefix: "[Dkron] "
statsd-addr: 127.0.0.1:8125
"""
IGNORED = ("bootstrap-expect", "bind-addr", "rpc-port", "encrypt", "retry-join", "raft-multiplier", "ui")


def _agent(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(agent, [*args, "--print-config"], env=env)


def _settings(result: Result) -> dict[str, Any]:
    assert result.exit_code == 0, result.output
    settings: dict[str, Any] = json.loads(result.stdout)
    return settings


def test_a_dkron_install_file_starts_a_node_and_names_each_ignored_key_once(tmp_path: Path) -> None:
    conf = tmp_path / "dkron.yml"
    conf.write_text(DKRON_YML)
    result = _agent("--config", str(conf))
    settings = _settings(result)
    assert settings["server"] is True
    assert (settings["node_name"], settings["data_dir"], settings["log_level"]) == (
        "dkron-1",
        "/var/lib/dkron",
        "debug",
    )
    assert (settings["datacenter"], settings["region"]) == ("eu-west-1a", "eu-west")
    assert settings["tags"] == {"role": "scheduler", "zone": "a"}
    assert settings["webhook_endpoint"] == "https://hooks.example.com/services/T000/B000/XXXX"
    assert settings["webhook_headers"] == ["Content-Type:application/json"]
    assert (settings["mail_host"], settings["mail_port"], settings["mail_from"]) == (
        "email-smtp.eu-west-1.amazonaws.com",
        587,
        "cron@example.com",
    )
    for key in IGNORED:
        assert result.stderr.count(f"Dkron's {key!r} is ignored") == 1, result.stderr
    assert "V2hhdCBhIGdvc3NpcCBrZXk=" not in result.output  # named, never shown
    assert "mailpassword" not in result.output


def test_dkron_environment_variables_are_read_below_ours_and_above_the_file(tmp_path: Path) -> None:
    conf = tmp_path / "dkron.yml"
    conf.write_text("region: file-region\ndatacenter: file-dc\n")
    env = {
        "DKRON_NODE_NAME": "from-dkron-env",
        "DKRON_TAG": "team=ops",
        "DKRON_WEBHOOK_URL": "https://hooks.example.com/x",
        "DKRON_REGION": "dkron-env-region",
        "DKRON_DATACENTER": "dkron-env-dc",
        "DKRON_NATS_DATACENTER": "our-env-dc",
        "DKRON_SERVER": "true",
        "DKRON_BOOTSTRAP_EXPECT": "3",
        "DKRON_JOB_NAME": "not-a-setting",  # a job's variable: neither read nor reported
    }
    result = _agent("--config", str(conf), env=env)
    settings = _settings(result)
    assert settings["node_name"] == "from-dkron-env"
    assert settings["server"] is True
    assert settings["tags"] == {"team": "ops"}
    assert settings["webhook_endpoint"] == "https://hooks.example.com/x"
    assert settings["region"] == "dkron-env-region"
    assert settings["datacenter"] == "our-env-dc"
    assert (
        "environment variable DKRON_BOOTSTRAP_EXPECT: Dkron's 'bootstrap-expect' is ignored" in result.stderr
    )
    assert "DKRON_JOB_NAME" not in result.stderr


def test_a_typo_of_our_own_key_is_refused_with_the_closest_key(tmp_path: Path) -> None:
    conf = tmp_path / "dkron.yml"
    conf.write_text("server: true\nnats-ulr: nats://10.0.0.5:4222\n")
    result = _agent("--config", str(conf))
    assert result.exit_code == 2
    assert "unknown setting 'nats-ulr'" in result.stderr
    assert "did you mean 'nats-url'?" in result.stderr


def test_a_dkron_host_name_with_dots_becomes_a_node_name_with_dashes(tmp_path: Path) -> None:
    """Dkron's node-name defaults to the full host name; a node name here is a NATS subject token."""
    conf = tmp_path / "dkron.yml"
    conf.write_text("server: true\nnode-name: web1.prod.example.com\n")
    result = _agent("--config", str(conf))
    assert _settings(result)["node_name"] == "web1-prod-example-com"
    assert "node-name 'web1.prod.example.com' is used as 'web1-prod-example-com'" in result.stderr
    from_env = _agent(env={"DKRON_NODE_NAME": "db.internal"})
    assert _settings(from_env)["node_name"] == "db-internal"
