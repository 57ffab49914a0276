"""The agent's local run journal: one empty file per execution it claimed and has not reported yet.

Written before the claim and removed after the result is published, so when the agent process dies
(kill -9, power loss) its next process knows exactly which executions can never report and ends them as
"agent lost", even if no leader saw the agent die. A file costs far less than a NATS write.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


class RunJournal:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def add(self, key: str) -> None:
        os.close(os.open(self.directory / key, os.O_CREAT | os.O_WRONLY, 0o600))

    def remove(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.directory / key)

    def keys(self) -> list[str]:
        return sorted(entry.name for entry in self.directory.iterdir())
