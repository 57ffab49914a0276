"""Cheaper child-process reaping on Python 3.11.

asyncio's default ThreadedChildWatcher starts one thread per subprocess just to wait for it; profiling showed
it as the largest single cost of running a shell job. Linux pidfds let the event loop wait for exits itself
(Python 3.12 does this by default).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

logger = logging.getLogger(__name__)


def use_pidfd_child_watcher() -> bool:
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return False
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:
        return False  # an old kernel or a sandbox without pidfds: keep the default watcher
    watcher = asyncio.PidfdChildWatcher()
    watcher.attach_loop(asyncio.get_running_loop())
    asyncio.set_child_watcher(watcher)
    return True
