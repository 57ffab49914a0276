"""What the API answers for an error no handler expected."""

from __future__ import annotations

from typing import Any, cast

from litestar import Request
from nats.js.errors import ServiceUnavailableError

from dkron_nats.http.app import _unexpected

REQUEST = cast(Request[Any, Any, Any], None)  # the handlers do not look at it


def test_jetstream_unavailable_answers_503_and_says_to_try_again() -> None:
    """A stream electing its leader after a NATS node loss is soon over: not an internal error."""
    response = _unexpected(REQUEST, ServiceUnavailableError(code=503, description="temporarily unavailable"))
    assert response.status_code == 503
    assert b"try again in a few seconds" in bytes(response.content)


def test_anything_else_is_an_internal_error() -> None:
    response = _unexpected(REQUEST, KeyError("boom"))
    assert response.status_code == 500
    assert b"internal error" in bytes(response.content)
