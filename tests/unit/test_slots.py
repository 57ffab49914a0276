"""The agent's execution slots: a limit, arrival order, and cancelled waiters that leave the line."""

from __future__ import annotations

import functools
from collections.abc import Callable

import anyio
import anyio.lowlevel
import pytest

from dkron_nats.agent.slots import SlotGate

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _take(gate: SlotGate, name: str, order: list[str]) -> None:
    await gate.acquire()
    order.append(name)


def _queued(gate: SlotGate, count: int) -> bool:
    return gate.queued == count


async def _until(condition: Callable[[], bool]) -> None:
    with anyio.fail_after(5):
        while not condition():
            await anyio.lowlevel.checkpoint()


async def test_waiters_get_freed_slots_in_arrival_order_and_never_above_the_limit() -> None:
    gate = SlotGate(2)
    order: list[str] = []
    assert gate.try_acquire()
    assert gate.try_acquire()
    assert not gate.try_acquire()
    async with anyio.create_task_group() as tg:
        for waiting, name in enumerate(("a", "b", "c"), start=1):
            tg.start_soon(_take, gate, name, order)
            await _until(functools.partial(_queued, gate, waiting))
        assert (gate.used, gate.queued, order) == (2, 3, [])
        assert not gate.try_acquire(), "a newcomer must not pass the ones already waiting"
        gate.release()
        await _until(lambda: order == ["a"])
        assert (gate.used, gate.queued) == (2, 2)
        gate.release()
        gate.release()
    assert order == ["a", "b", "c"]
    assert (gate.used, gate.queued) == (2, 0)
    for _ in range(2):
        gate.release()
    assert gate.used == 0
    with pytest.raises(RuntimeError):
        gate.release()


async def test_a_cancelled_waiter_leaves_the_line_and_a_slot_handed_to_it_passes_on() -> None:
    gate = SlotGate(1)
    order: list[str] = []
    assert gate.try_acquire()
    with anyio.fail_after(5):  # a slot lost with the cancelled waiter would leave "next" waiting forever
        await _hand_over_while_cancelling(gate, order)
    assert order == ["next"]
    assert (gate.used, gate.queued) == (1, 0)
    gate.release()
    assert gate.used == 0


async def _hand_over_while_cancelling(gate: SlotGate, order: list[str]) -> None:
    async with anyio.create_task_group() as tg:
        cancelled = anyio.CancelScope()

        async def cancellable() -> None:
            with cancelled:
                await _take(gate, "cancelled", order)

        tg.start_soon(cancellable)
        await _until(lambda: gate.queued == 1)
        tg.start_soon(_take, gate, "next", order)
        await _until(lambda: gate.queued == 2)
        # The first waiter is cancelled and handed the slot in the same instant: the slot must pass on.
        cancelled.cancel()
        gate.release()


async def test_a_waiter_cancelled_in_line_frees_its_place() -> None:
    gate = SlotGate(1)
    assert gate.try_acquire()
    with anyio.move_on_after(0.05):
        await gate.acquire()
    assert (gate.used, gate.queued) == (1, 0)
    gate.release()
    assert gate.try_acquire()


def test_no_limit_takes_every_request_at_once() -> None:
    gate = SlotGate(0)
    assert all(gate.try_acquire() for _ in range(1000))
    assert (gate.used, gate.queued) == (1000, 0)
    with pytest.raises(ValueError, match="0 \\(no limit\\) or more"):
        SlotGate(-1)
