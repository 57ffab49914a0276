from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Node, running


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """One single-node server shared by the contract tests (each test uses its own job names)."""
    with running(Node(tmp_path_factory.mktemp("server"))) as node:
        yield node


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"
