"""Crash points for fault tests: a real `kill -9` of this process at a named step.

Timing alone cannot put a leader's death between two writes that are microseconds apart, so a test arms a
point by creating a file named after it in the directory `DKRON_NATS_FAILPOINTS_DIR` names. The first
process that reaches the point removes the file (only one can) and kills itself with SIGKILL, which skips
every `finally` and shutdown step exactly as a crash would. Without the variable, a point costs one check
of a module constant.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

_ARMED_IN = os.environ.get("DKRON_NATS_FAILPOINTS_DIR")


def crash_point(name: str) -> None:
    """SIGKILL this process here if a test armed `name`."""
    if _ARMED_IN is None:
        return
    try:
        (Path(_ARMED_IN) / name).unlink()
    except FileNotFoundError:
        return
    os.kill(os.getpid(), signal.SIGKILL)
