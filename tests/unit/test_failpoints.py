"""Arming a fault point for one node of a cluster: `<name>@<node>` fires on that node only."""

from __future__ import annotations

from pathlib import Path

import pytest

from dkron_nats import failpoints


@pytest.fixture
def armed_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(failpoints, "_ARMED_IN", str(tmp_path))
    monkeypatch.setattr(failpoints, "_node", "")
    return tmp_path


def test_a_point_armed_for_another_node_stays_armed_and_does_not_fire_here(armed_in: Path) -> None:
    failpoints.scope("s1")
    (armed_in / "fanin-decided@s2").touch()
    assert not failpoints._armed("fanin-decided")
    assert (armed_in / "fanin-decided@s2").exists()


def test_a_point_armed_for_this_node_fires_once(armed_in: Path) -> None:
    failpoints.scope("s2")
    (armed_in / "fanin-decided@s2").touch()
    assert failpoints._armed("fanin-decided")
    assert not failpoints._armed("fanin-decided")


def test_a_point_armed_for_any_node_fires_on_the_first_to_reach_it(armed_in: Path) -> None:
    failpoints.scope("s3")
    (armed_in / "fanin-decided").touch()
    assert failpoints._armed("fanin-decided")
    assert not (armed_in / "fanin-decided").exists()
