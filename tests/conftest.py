from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.harness import STARTED, Node, running

_STARTED_BEFORE = pytest.StashKey[int]()

UI_ORIGIN = "http://ui.example"
"""The one `--cors-origin` of the shared server: pages from there may call it."""


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """One single-node server shared by the contract tests (each test uses its own job names)."""
    with running(Node(tmp_path_factory.mktemp("server"), extra=["--cors-origin", UI_ORIGIN])) as node:
        yield node


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def _nodes_of(item: pytest.Item, started_before: int) -> list[Node]:
    """The dkron-nats processes a test used: fixtures holding one Node or a dict of them, and every
    node it started itself."""
    found: list[Node] = []
    for value in getattr(item, "funcargs", {}).values():
        candidates = value.values() if isinstance(value, dict) else [value]
        found += [c for c in candidates if isinstance(c, Node)]
    found += [node for node in STARTED[started_before:] if node not in found]
    return found


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    item.stash[_STARTED_BEFORE] = len(STARTED)
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On a failure, attach the end of every node's log: a flaky cluster test explains itself in CI."""
    report = yield
    if report.failed and call.when == "call":
        for node in _nodes_of(item, item.stash.get(_STARTED_BEFORE, len(STARTED))):
            tail = node.logs().splitlines()[-150:]
            report.sections.append((f"log of {node.name} (last {len(tail)} lines)", "\n".join(tail)))
    return report
