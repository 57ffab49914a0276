"""A conditional delete that finds another revision is a conflict, whatever code JetStream gives it."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from nats.js.errors import APIError, BadRequestError
from nats.js.kv import KeyValue

from dkron_nats.kv.typed import delete_at


class _Refusing:
    def __init__(self, error: APIError) -> None:
        self.error = error

    async def delete(self, key: str, last: int) -> None:
        raise self.error


@pytest.mark.parametrize("code", [10071, 10164])
def test_wrong_last_sequence_is_a_conflict_not_an_error(code: int) -> None:
    """10164 came from a replicated lease bucket in CI: a server releasing a partition taken over from it
    raised it out of its release, and the server ended."""
    refusing = _Refusing(BadRequestError(code=400, err_code=code, description="wrong last sequence"))
    assert asyncio.run(delete_at(cast(KeyValue, refusing), "scheduler.5", 7)) is False


def test_any_other_refusal_is_raised() -> None:
    refusing: Any = _Refusing(BadRequestError(code=400, err_code=10058, description="stream name in use"))
    with pytest.raises(APIError):
        asyncio.run(delete_at(refusing, "scheduler.5", 7))
