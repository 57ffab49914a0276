"""The node's client must talk to its own embedded nats-server, never to a stranger on its port."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from dkron_nats.natsserver import EmbeddedNats, PortInUseError

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def embedded(tmp_path: Path) -> EmbeddedNats:
    return EmbeddedNats(tmp_path, "127.0.0.1:4333", "node-a")


async def test_a_stranger_on_our_address_stops_the_node(tmp_path: Path) -> None:
    nats = embedded(tmp_path)
    nats.check_server("127.0.0.1", 4333, "someone-else")
    with (
        anyio.fail_after(1),
        pytest.raises(PortInUseError, match=r"'someone-else' on 127\.0\.0\.1:4333.*--nats-listen"),
    ):
        await nats.refuse_strangers()


async def test_our_own_server_and_cluster_peers_are_accepted(tmp_path: Path) -> None:
    nats = embedded(tmp_path)
    nats.check_server("127.0.0.1", 4333, "node-a")  # our child
    nats.check_server("10.0.0.7", 4222, "node-b")  # a peer of the cluster the client failed over to
    with anyio.move_on_after(0.2) as waited:
        await nats.refuse_strangers()
    assert waited.cancelled_caught, "refused a server that was ours or a peer"
