"""The run intake's credit: it never waits for a pull that will not come."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import anyio
import pytest
from anyio.abc import TaskGroup
from nats.aio.msg import Msg

from dkron_nats.kv.buckets import RUNS_STREAM
from dkron_nats.kv.puller import CONSUMER_POLL, LOST_AFTER, PULL_EXPIRES, Puller
from tests.natsbackend import wait_for_async

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Connection:
    """What the intake asks of its NATS connection: an inbox, its reconnects, and pull requests sent."""

    def __init__(self) -> None:
        self.stats = {"reconnects": 0}
        self.pulls: list[bytes] = []
        self.replies: list[str] = []
        self.inbox, self.messages = anyio.create_memory_object_stream[Msg](100)

    def new_inbox(self) -> str:
        return "_INBOX.n1"

    async def publish(self, subject: str, body: bytes, reply: str) -> None:
        self.pulls.append(body)
        self.replies.append(reply)

    async def subscribe(self, subject: str, **_: object) -> Connection:
        return self

    async def unsubscribe(self) -> None:
        pass

    pending_msgs = 0
    """Delivered and unread when the intake stops: none here."""

    async def answer(self, reply: str, headers: dict[str, str] | None = None) -> None:
        """What the server sends to a pull's reply subject: a run request, or a status that ends the pull."""
        await self.inbox.send(Msg(cast(Any, self), subject=reply, data=b"request", headers=headers))


class JetStream:
    """Counts the agent's looks for its consumer (it exists)."""

    def __init__(self) -> None:
        self.looks = 0

    async def consumer_info(self, stream: str, consumer: str, timeout: float) -> None:  # noqa: ASYNC109 (nats-py's signature)
        self.looks += 1


async def test_a_pull_lost_with_its_server_is_written_off_once_expired(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The NATS server holding a pull dies (a node kill in a cluster): no status ever ends the pull. Once it
    has expired, its credit must come back, or the agent never asks again (in a cluster test an agent took
    nothing for five minutes after a NATS node was killed)."""
    now = [1000.0]
    monkeypatch.setattr("dkron_nats.kv.puller.time.monotonic", lambda: now[0])
    nc = Connection()
    puller = Puller(cast(Any, nc), cast(Any, None), RUNS_STREAM, "run-n1", room=lambda: 10)
    await puller.top_up()
    assert nc.pulls == [b'{"batch":10,"expires":5000000000}']
    await puller.top_up()
    assert len(nc.pulls) == 1, "asked again while the first pull may still deliver"
    now[0] += PULL_EXPIRES + LOST_AFTER + 0.1  # nothing delivered, no status: the pull is lost
    await puller.top_up()
    assert len(nc.pulls) == 2, "the lost pull's credit never came back"
    assert puller.credit == 10


async def _pulls_out(nc: Connection, puller: Puller, room: list[int], count: int) -> None:
    """`count` pulls out, as room came free bit by bit."""
    for out in range(1, count + 1):
        room[0] = 16 * out
        await puller.top_up()
    assert len(nc.pulls) == count


@contextlib.asynccontextmanager
async def _five_pulls_out() -> AsyncIterator[tuple[Connection, JetStream, Puller, list[float], TaskGroup]]:
    """A puller that has looked for its consumer once and has five pulls out; the times it took requests."""
    nc, js = Connection(), JetStream()
    room = [0]
    puller = Puller(cast(Any, nc), cast(Any, js), RUNS_STREAM, "run-n1", room=lambda: room[0])
    taken: list[float] = []

    async def take(msg: Msg) -> None:
        taken.append(time.monotonic())

    async with anyio.create_task_group() as tg:
        tg.start_soon(puller.run, take)
        await wait_for_async(lambda: _looked(js, 1), what="the first look for the consumer")
        await _pulls_out(nc, puller, room, 5)
        yield nc, js, puller, taken, tg


async def test_when_the_consumers_leader_moves_the_agent_asks_the_new_leader_at_once() -> None:
    """The NATS server of a killed node stops, and its consumers' leaders move: the new leader ends every pull
    still out with 409 Leadership Change, at once. The agent took each for a refusal and paused 0.2 s, one
    after the other, taking nothing meanwhile: a chaos run's takeover waited two seconds behind ten of them.
    It is no refusal: the agent asks the new leader again at once, for all the room there is."""
    async with _five_pulls_out() as (nc, js, puller, taken, tg):
        moved_at = time.monotonic()
        for reply in list(nc.replies):
            await nc.answer(reply, {"Status": "409", "Description": "Leadership Change"})
        await wait_for_async(lambda: _pulled(nc, 6), what="a pull to the new leader")
        asked_again_after = time.monotonic() - moved_at
        await nc.answer(nc.replies[-1])  # the new leader delivers
        await wait_for_async(lambda: _taken(taken), what="the request taken")
        tg.cancel_scope.cancel()
    assert asked_again_after < CONSUMER_POLL / 2, f"asked the new leader only after {asked_again_after:.2f}s"
    assert js.looks == 1, "looked for a consumer that had only changed leaders"
    assert puller.credit == 80 - 1, "did not ask the new leader for all the room there is"


async def test_a_burst_of_refusals_costs_one_pause_not_one_each() -> None:
    """The consumer is gone (a leader took the node for gone) and every pull still out is refused. The agent
    holds new pulls back once, looks for its consumer once, and takes at once what arrives meanwhile from a
    pull that still works."""
    async with _five_pulls_out() as (nc, js, _puller, taken, tg):
        refused_at = time.monotonic()
        for reply in list(nc.replies[:4]):
            await nc.answer(reply, {"Status": "409", "Description": "Consumer Deleted"})
        await nc.answer(nc.replies[4])  # a request from the pull still out
        await wait_for_async(lambda: _pulled(nc, 6), what="a pull after the pause")
        await anyio.sleep(CONSUMER_POLL * 3)  # what a pause per refusal would still be doing
        tg.cancel_scope.cancel()
    assert taken, "the request from the pull still out was never taken"
    assert taken[0] - refused_at < CONSUMER_POLL, "the request waited behind the pauses"
    assert js.looks == 2, f"looked for the consumer {js.looks - 1} times after one burst of refusals"
    assert len(nc.pulls) == 6, f"{len(nc.pulls) - 5} pulls after one burst of refusals"


async def _looked(js: JetStream, times: int) -> bool:
    return js.looks >= times


async def _pulled(nc: Connection, times: int) -> bool:
    return len(nc.pulls) >= times


async def _taken(taken: list[float]) -> bool:
    return bool(taken)
