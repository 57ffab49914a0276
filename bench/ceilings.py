"""The raw ceilings of this machine with the same NATS server and client dkron-nats uses.

Every other benchmark is judged against these: an execution costs at least a few KV writes, a run request and
a process spawn, so these rates bound what the scheduler can sustain. Each figure is an operation rate over a
fixed window on one embedded nats-server (JetStream on disk, one replica), measured from one asyncio process:

  kv_put_seq / kv_put_concurrent   KeyValue.put, one at a time / 64 in flight
  kv_get_seq                        KeyValue.get of an existing key
  js_publish_seq / _concurrent      JetStream publish awaiting the ack, one at a time / 64 in flight
  js_publish_pipelined              JetStream publish as a core publish whose ack comes to one shared inbox
                                    subscription, 64 in flight, acks counted (no future per message)
  request_reply_seq                 core NATS request answered by a subscriber in the same process
  spawn_true_seq / _concurrent      fork/exec + wait of /bin/true, one at a time / 4 at a time
  bare_pipeline                     executions/s of the bare execution pipeline (bench/pipeline.py): run
                                    request, batch pull, create-only claim, no-op job, CAS record, ack and a
                                    consumer seeing every record; with its messages and CPU per execution
                                    and its audit (0 lost, 0 duplicated)

    python -m bench.ceilings            # 5 s per figure
    python -m bench.ceilings --quick    # 1 s per figure
    python -m bench.ceilings --only bare_pipeline js_publish_pipelined
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
from bench.pipeline import bare_pipeline, publish_rate
from dkron_nats.natsserver import EmbeddedNats
from tests.harness import free_port, pid_with_argument

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


async def measure(seconds: float, only: set[str] | None = None) -> tuple[dict[str, float], dict[str, Any]]:
    """Every figure's rate (or those in `only`), and the bare pipeline's details when it was measured."""
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

                details: dict[str, Any] = {}

                async def pipeline() -> float:
                    pid = pid_with_argument(str(Path(tmp) / "nats-server.conf"), "nats-server") or 0
                    details.update(await bare_pipeline(server.url, seconds, pid))
                    return float(details["executions_per_s"])

                figures: dict[str, Callable[[], Awaitable[float]]] = {
                    "kv_put_seq": lambda: rate(kv_put, seconds),
                    "kv_put_concurrent": lambda: rate(kv_put, seconds, in_flight=64),
                    "kv_get_seq": lambda: rate(kv_get, seconds),
                    "js_publish_seq": lambda: rate(js_publish, seconds),
                    "js_publish_concurrent": lambda: rate(js_publish, seconds, in_flight=64),
                    "js_publish_pipelined": lambda: publish_rate(nc, "ceilings", PAYLOAD, seconds),
                    "request_reply_seq": lambda: rate(request, seconds),
                    "spawn_true_seq": lambda: rate(spawn_true, seconds),
                    "spawn_true_concurrent": lambda: rate(spawn_true, seconds, in_flight=4),
                    "bare_pipeline": pipeline,
                }
                unknown = (only or set()) - set(figures)
                if unknown:
                    raise SystemExit(
                        f"no such figure: {', '.join(sorted(unknown))} (known: {', '.join(figures)})"
                    )
                rates = {name: await run() for name, run in figures.items() if not only or name in only}
                return rates, details
            finally:
                await nc.close()


def report(figures: dict[str, float], seconds: float, pipeline: dict[str, Any]) -> dict[str, Any]:
    out = {
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "seconds_per_figure": seconds,
        "ops_per_second": {name: round(value) for name, value in figures.items()},
    }
    if pipeline:
        out["bare_pipeline"] = pipeline
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 s per figure instead of 5 s")
    parser.add_argument("--only", nargs="*", metavar="FIGURE", help="measure only these figures")
    args = parser.parse_args()
    seconds = 1.0 if args.quick else 5.0
    rates, pipeline = asyncio.run(measure(seconds, set(args.only) if args.only else None))
    result = report(rates, seconds, pipeline)
    for name, value in result["ops_per_second"].items():
        print(f"{name:24} {value:>10,} ops/s")
    for name, value in pipeline.items():
        print(f"  bare_pipeline {name:34} {value:>10,}")
    if args.only:
        print("not written: a partial run keeps the stored results of the last whole one")
    else:
        write_results("ceilings", args.quick, result)


if __name__ == "__main__":
    main()
