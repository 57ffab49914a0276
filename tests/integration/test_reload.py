"""SIGHUP (`systemctl reload`, logrotate) re-reads the config file: the node keeps running, takes the settings
that can change while it runs (its tags reach /v1/members and job targeting), names the rest, and keeps its
settings when the new file is bad."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.harness import Node, job, running, wait_for

STARTING = """\
tags:
  team: blue
log-level: info
"""

RELOADED = """\
# the same node, its file now written the way a Dkron install writes it
server: true
bootstrap-expect: 1
log-level: debug
tags:
  team: green
encrypt: c2VjcmV0LWdvc3NpcC1rZXk=
retry-join:
  - 10.0.0.1
mail-host: smtp.example.com
mail-port: 25
max-executions: 50
files-processor-root: {files_root}
"""


def _hang_up(node: Node) -> None:
    assert node.proc is not None
    os.kill(node.proc.pid, signal.SIGHUP)


def _tags(node: Node) -> dict[str, str] | None:
    assert node.proc is not None
    if node.proc.poll() is not None:
        raise AssertionError(f"the node ended on SIGHUP (exit code {node.proc.returncode})")
    members = node.get("/v1/members").json()
    tags: dict[str, str] = next(m["Tags"] for m in members if m["Name"] == node.name)
    return tags


def _logged(node: Node, *parts: str) -> bool:
    return any(all(part in line for part in parts) for line in node.logs().splitlines())


def test_sighup_applies_tags_and_log_level_names_the_rest_and_keeps_serving(tmp_path: Path) -> None:
    conf = tmp_path / "dkron.yml"
    conf.write_text(STARTING)
    with running(Node(tmp_path / "data", extra=["--config", str(conf)])) as node:
        assert (_tags(node) or {}).get("team") == "blue"
        green = job("green-only", command="echo ran", tags={"team": "green"}, processors={"files": {}})
        node.post("/v1/jobs", json=green).raise_for_status()
        assert node.post("/v1/jobs/green-only").status_code == 404  # no node is tagged team=green yet

        files_root = tmp_path / "processor-files-after-reload"
        conf.write_text(RELOADED.format(files_root=files_root))
        _hang_up(node)
        wait_for(lambda: (_tags(node) or {}).get("team") == "green", 20, "the new tags in /v1/members")
        wait_for(
            lambda: _logged(node, "configuration reloaded: applied", "tags", "log-level ('info' -> 'debug')"),
            10,
            "the applied settings in the log",
        )
        assert _logged(node, "take effect only when the node restarts", "max-executions (100 -> 50)")
        assert _logged(node, "Dkron's 'bootstrap-expect' is ignored")
        assert not _logged(node, "c2VjcmV0LWdvc3NpcC1rZXk=")  # Dkron's gossip key is named, never shown
        # Job targeting follows the new tags, and the node still serves.
        assert node.post("/v1/jobs/green-only").status_code == 200
        wait_for(lambda: node.get("/v1/jobs/green-only").json()["success_count"] == 1, 20, "the run")
        # The files processor writes under the root the reload set (processors' settings apply at once).
        assert [p.read_text() for p in files_root.glob("*.log")] == ["ran\n"]

        conf.write_text("tags:\n  team: [unclosed\n")
        _hang_up(node)
        wait_for(lambda: _logged(node, "configuration not reloaded", str(conf)), 10, "the refusal in the log")
        assert (_tags(node) or {})["team"] == "green"
        assert node.get("/health").status_code == 200
