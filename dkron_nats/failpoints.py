"""Fault points for fault tests: a real `kill -9` (or SIGSTOP) of this process at a named step.

Timing alone cannot put a leader's death between two writes that are microseconds apart, so a test arms a
point by creating a file named after it in the directory `DKRON_NATS_FAILPOINTS_DIR` names. The first
process that reaches the point removes the file (only one can) and kills itself with SIGKILL, which skips
every `finally` and shutdown step exactly as a crash would; a stall point stops the process (SIGSTOP) until
the test continues it, as a long GC pause or a frozen VM would; an outage point fails the step as a JetStream
stream without a leader would once every retry is spent. Without the variable, a point costs one check of a
module constant.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from nats.js.errors import NoStreamResponseError

_ARMED_IN = os.environ.get("DKRON_NATS_FAILPOINTS_DIR")
_node = ""


def scope(node: str) -> None:
    """This process is node `node`: a point armed as `<name>@<node>` fires here only (in a cluster of
    several partition owners, the test names the owner it means)."""
    global _node  # set once at start-up, before any point is reached
    _node = node


def crash_point(name: str) -> None:
    """SIGKILL this process here if a test armed `name`."""
    if _armed(name):
        os.kill(os.getpid(), signal.SIGKILL)


def stall_point(name: str) -> None:
    """SIGSTOP this process here if a test armed `name` (the test sends SIGCONT)."""
    if _armed(name):
        os.kill(os.getpid(), signal.SIGSTOP)


def outage_point(name: str) -> None:
    """Fail this step here, as an unavailable stream does after every retry, if a test armed `name`."""
    if _armed(name):
        raise NoStreamResponseError


def _armed(name: str) -> bool:
    """True for the one process that disarms the point."""
    if _ARMED_IN is None:
        return False
    for armed in (f"{name}@{_node}", name) if _node else (name,):
        try:
            (Path(_ARMED_IN) / armed).unlink()
        except FileNotFoundError:
            continue
        return True
    return False
