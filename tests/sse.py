"""A small Server-Sent Events reader for tests: (event, data, arrival time) as they come."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class Event:
    kind: str
    data: dict[str, Any]
    at: float
    """time.monotonic() when it arrived."""


def events(url: str, timeout: float = 30.0) -> Iterator[Event]:
    """Follow an SSE endpoint until the server closes the stream."""
    headers = {"Accept": "text/event-stream"}
    with httpx.stream("GET", url, headers=headers, timeout=timeout) as response:
        response.raise_for_status()
        assert response.headers["content-type"].startswith("text/event-stream")
        kind, data = "message", list[str]()
        for line in response.iter_lines():
            if not line:
                if data:
                    yield Event(kind, json.loads("\n".join(data)), time.monotonic())
                kind, data = "message", []
            elif line.startswith("event:"):
                kind = line.partition(":")[2].strip()
            elif line.startswith("data:"):
                data.append(line.partition(":")[2].removeprefix(" "))


def output_of(stream: list[Event]) -> str:
    return "".join(e.data["output"] for e in stream if e.kind == "output")
