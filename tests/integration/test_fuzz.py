"""The API under a short property-based fuzzing run (bench/fuzz.py has the long one), and its OpenAPI
document checked against the routes the app really serves, so that neither can drift from the other."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import cast

import pytest
import schemathesis
from schemathesis.core.result import Err

from bench.fuzz import fuzz
from dkron_nats.http.app import create_app
from dkron_nats.http.openapi import OPERATIONS, UNDOCUMENTED, served_operations
from dkron_nats.http.services import Services
from tests.harness import Node, running

EXAMPLES = 20
"""Cases per operation: about 20 s for the whole API on the 2-core machine (the long run: `make fuzz`)."""


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """A node of its own: the fuzzer pauses, deletes and creates jobs at random."""
    with running(Node(tmp_path_factory.mktemp("fuzz"), name="fuzzed")) as started:
        yield started


def _app_operations() -> set[tuple[str, str]]:
    """(method, path) of every route `create_app` serves; building the app reads only these two fields."""
    services = cast(Services, SimpleNamespace(node_name="n", max_body_bytes=1024, auth=None, audit=None))
    return set(served_operations(create_app(services).routes))


def test_every_described_operation_is_served_and_every_served_one_described() -> None:
    served = _app_operations()
    assert sorted(set(OPERATIONS) - served) == [], "described but not served: remove from OPERATIONS"
    assert sorted(served - set(OPERATIONS)) == [], "served but not described: add to OPERATIONS"


def test_the_served_document_lists_every_route_of_the_app_and_nothing_else(node: Node) -> None:
    document = node.get("/openapi.json").json()
    listed = {(method.upper(), path) for path, ops in document["paths"].items() for method in ops}
    assert listed == _app_operations()
    undocumented = sorted(
        f"{method.upper()} {path}"
        for path, ops in document["paths"].items()
        for method, operation in ops.items()
        if operation.get(UNDOCUMENTED)
    )
    assert undocumented == [], "describe these routes in dkron_nats/http/openapi.py OPERATIONS"


def test_the_document_is_valid_openapi_with_every_operation_loadable(node: Node) -> None:
    schema = schemathesis.openapi.from_dict(node.get("/openapi.json").json())
    results = list(schema.get_all_operations())
    failed = [str(result.err()) for result in results if isinstance(result, Err)]
    assert failed == []
    assert len(results) == len(_app_operations())


@pytest.mark.timeout(300)
def test_a_short_fuzzing_run_finds_no_5xx_hang_nonconformance_or_garbage(node: Node) -> None:
    report = fuzz(node, examples=EXAMPLES, timeout=5.0, derandomize=True)
    assert report.findings == [], report.summary()
    # Some operations have few distinct inputs: at least half the examples on average shows it really ran.
    assert report.requests > EXAMPLES // 2 * len(report.operations), report.summary()
    assert report.statuses[201] > 0, "no job was stored, so the stored-garbage check checked nothing"
