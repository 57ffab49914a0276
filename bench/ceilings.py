"""The raw ceilings of this machine with the same NATS server and client dkron-nats uses.

Every other benchmark is judged against these: an execution costs at least a few KV writes, a run request and
a process spawn, so these rates bound what the scheduler can sustain. Each figure is an operation rate over a
fixed window on one embedded nats-server (JetStream on disk, one replica), measured from one asyncio process:

  kv_put_seq / kv_put_concurrent   KeyValue.put, one at a time / 64 in flight
  kv_get_seq                        KeyValue.get of an existing key
  js_publish_seq / _concurrent      JetStream publish awaiting the ack, one at a time / 64 in flight
  request_reply_seq                 core NATS request answered by a subscriber in the same process
  spawn_true_seq / _concurrent      fork/exec + wait of /bin/true, one at a time / 4 at a time

    python -m bench.ceilings            # 5 s per figure
    python -m bench.ceilings --quick    # 1 s per figure
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
from nats.aio.msg import Msg
from nats.js.api import KeyValueConfig, StorageType, StreamConfig

from bench.common import write_results
from dkron_nats.natsserver import EmbeddedNats
from tests.harness import free_port

PAYLOAD = b"x" * 256
"""About the size of a job's cursor or state record."""


async def rate(operation: Callable[[int], Awaitable[object]], seconds: float, in_flight: int = 1) -> float:
    """Completed operations per second with `in_flight` workers running `operation(i)` back to back."""
    done = 0
    deadline = time.monotonic() + seconds

    async def worker(offset: int) -> None:
        nonlocal done
        i = offset
        while time.monotonic() < deadline:
            await operation(i)
            done += 1
            i += in_flight

    started = time.monotonic()
    await asyncio.gather(*(worker(n) for n in range(in_flight)))
    return done / (time.monotonic() - started)


async def spawn_true(_: int) -> None:
    proc = await asyncio.create_subprocess_exec("/bin/true")
    await proc.wait()


async def measure(seconds: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="ceilings-") as tmp:
        async with EmbeddedNats(Path(tmp), f"127.0.0.1:{free_port()}", "ceilings") as server:
            nc = await nats.connect(server.url)
            try:
                js = nc.jetstream()
                kv = await js.create_key_value(KeyValueConfig(bucket="ceilings", storage=StorageType.FILE))
                await js.add_stream(StreamConfig(name="CEILINGS", subjects=["ceilings.>"], max_msgs=100_000))
                await kv.put("k0", PAYLOAD)

                async def reply(msg: Msg) -> None:
                    await msg.respond(b"ok")

                await nc.subscribe("ceilings.echo", cb=reply)

                async def kv_put(i: int) -> None:
                    await kv.put(f"k{i % 10_000}", PAYLOAD)

                async def kv_get(_: int) -> None:
                    await kv.get("k0")

                async def js_publish(i: int) -> None:
                    await js.publish(f"ceilings.{i % 100}", PAYLOAD)

                async def request(_: int) -> None:
                    await nc.request("ceilings.echo", PAYLOAD, timeout=5)

                return {
                    "kv_put_seq": await rate(kv_put, seconds),
                    "kv_put_concurrent": await rate(kv_put, seconds, in_flight=64),
                    "kv_get_seq": await rate(kv_get, seconds),
                    "js_publish_seq": await rate(js_publish, seconds),
                    "js_publish_concurrent": await rate(js_publish, seconds, in_flight=64),
                    "request_reply_seq": await rate(request, seconds),
                    "spawn_true_seq": await rate(spawn_true, seconds),
                    "spawn_true_concurrent": await rate(spawn_true, seconds, in_flight=4),
                }
            finally:
                await nc.close()


def report(figures: dict[str, float], seconds: float) -> dict[str, Any]:
    return {
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "seconds_per_figure": seconds,
        "ops_per_second": {name: round(value) for name, value in figures.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 s per figure instead of 5 s")
    args = parser.parse_args()
    seconds = 1.0 if args.quick else 5.0
    result = report(asyncio.run(measure(seconds)), seconds)
    for name, value in result["ops_per_second"].items():
        print(f"{name:24} {value:>10,} ops/s")
    write_results("ceilings", args.quick, result)


if __name__ == "__main__":
    main()
