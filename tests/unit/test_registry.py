"""Who the registry takes for alive: heartbeats judged against the latest news, not the wall of the clock."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, cast

import pytest

from dkron_nats import members
from dkron_nats.members import Registry
from dkron_nats.models import Member

TTL = 10.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(members, "time", SimpleNamespace(monotonic=fake))
    return fake


def _member(name: str) -> Member:
    started = datetime(2026, 1, 1, tzinfo=UTC)
    return Member(name=name, addr="127.0.0.1", port=1, tags={}, server=False, version="t", started_at=started)


def _heartbeat(registry: Registry, name: str, revision: int) -> None:
    """What the KV watch delivers when a node writes its heartbeat."""
    registry.cache.apply(name, _member(name), revision)


def _alive(registry: Registry) -> set[str]:
    return {m.name for m in registry.alive()}


def test_a_node_whose_heartbeats_stop_while_others_go_on_is_dead_after_a_ttl(clock: Clock) -> None:
    registry = Registry(cast(Any, None), TTL)
    _heartbeat(registry, "a", 1)
    _heartbeat(registry, "b", 2)
    revision = 3
    for _ in range(5):  # "b" goes on every 2.5 s; "a" is silent
        clock.now += 2.5
        _heartbeat(registry, "b", revision)
        revision += 1
    assert _alive(registry) == {"b"}
    assert {m.name for m in registry.failed()} == {"a"}


def test_when_no_heartbeat_arrives_at_all_nobody_is_taken_for_dead(clock: Clock) -> None:
    """The members bucket is unreachable (NATS node lost): silence says nothing about the nodes."""
    registry = Registry(cast(Any, None), TTL)
    _heartbeat(registry, "a", 1)
    _heartbeat(registry, "b", 2)
    clock.now += 60
    assert _alive(registry) == {"a", "b"}
    # News again, from "b" only: "a" is dead once "b" has been heard for a TTL without it.
    revision = 3
    for _ in range(2):
        clock.now += 2.5
        _heartbeat(registry, "b", revision)
        revision += 1
    assert _alive(registry) == {"a", "b"}, "a node alive after the blackout has a heartbeat interval to speak"
    for _ in range(2):
        clock.now += 2.5
        _heartbeat(registry, "b", revision)
        revision += 1
    assert _alive(registry) == {"b"}


def test_a_node_that_leaves_gracefully_is_gone_at_once(clock: Clock) -> None:
    registry = Registry(cast(Any, None), TTL)
    _heartbeat(registry, "a", 1)
    registry.cache.apply("a", None, 2)
    assert _alive(registry) == set()
    assert registry.failed() == []


def test_a_node_confirmed_gone_is_no_target_until_it_heartbeats_again(clock: Clock) -> None:
    registry = Registry(cast(Any, None), TTL)
    _heartbeat(registry, "a", 1)
    _heartbeat(registry, "b", 2)
    registry.confirm_gone("a")  # its process's NATS connection is gone (the presence probe said so)
    assert {m.name for m in registry.reachable()} == {"b"}
    assert _alive(registry) == {"a", "b"}, "its running executions are not ruled lost before the TTL"
    clock.now += 2.5
    _heartbeat(registry, "a", 3)  # it was only cut off for a moment
    assert {m.name for m in registry.reachable()} == {"a", "b"}
