"""The agent's local run journal: which executions it claimed and has not reported yet.

A line `+<key>` is appended before the claim and `-<key>` after the result is published, so when the agent
process dies (kill -9, power loss) its next process knows exactly which executions can never report and
ends them as "agent lost", even if no leader saw the agent die. An append to an open file costs a few
microseconds; the earlier one-file-per-execution journal (still read, for an upgrade) cost a file creation
and a deletion per execution, a tenth of the agent's time at a few hundred executions per second.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

LOG_NAME = "journal.log"
COMPACT_AFTER = 10_000
"""Lines appended before the log is rewritten with only the open keys."""


class RunJournal:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / LOG_NAME
        self._open = self._replay()
        self._lines = 0
        self._fd = -1
        self._rewrite()

    def _replay(self) -> set[str]:
        open_keys: set[str] = set()
        with contextlib.suppress(FileNotFoundError):
            for line in self.path.read_text(errors="replace").splitlines():
                if line.startswith("+"):
                    open_keys.add(line[1:])
                elif line.startswith("-"):
                    open_keys.discard(line[1:])
        for entry in self.directory.iterdir():  # the one-file-per-execution journal of earlier versions
            if entry.name != LOG_NAME and not entry.name.startswith("."):
                open_keys.add(entry.name)
                entry.unlink(missing_ok=True)
        return open_keys

    def _rewrite(self) -> None:
        """Replace the log by one holding only the open keys (written aside, then renamed over it)."""
        temporary = self.directory / f".{LOG_NAME}.new"
        temporary.write_text("".join(f"+{key}\n" for key in sorted(self._open)))
        os.replace(temporary, self.path)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._lines = len(self._open)

    def _append(self, line: str) -> None:
        os.write(self._fd, line.encode())
        self._lines += 1
        if self._lines >= COMPACT_AFTER and len(self._open) < COMPACT_AFTER // 2:
            self._rewrite()

    def add(self, key: str) -> None:
        self._open.add(key)
        self._append(f"+{key}\n")

    def remove(self, key: str) -> None:
        if key in self._open:
            self._open.discard(key)
            self._append(f"-{key}\n")

    def keys(self) -> list[str]:
        return sorted(self._open)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
