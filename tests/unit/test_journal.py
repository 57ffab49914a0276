"""The agent's run journal: what a killed process claimed and never reported is known to the next one."""

from __future__ import annotations

from pathlib import Path

import pytest

from dkron_nats.agent import journal as journal_module
from dkron_nats.agent.journal import RunJournal


def test_the_next_process_finds_what_was_claimed_and_not_reported(tmp_path: Path) -> None:
    first = RunJournal(tmp_path)
    first.add("job-a.1-n1")
    first.add("job-b.2-n1")
    first.remove("job-a.1-n1")
    # No close: the process is killed here.
    assert RunJournal(tmp_path).keys() == ["job-b.2-n1"]


def test_a_graceful_process_leaves_nothing(tmp_path: Path) -> None:
    journal = RunJournal(tmp_path)
    for i in range(50):
        journal.add(f"job.{i}-n1")
        journal.remove(f"job.{i}-n1")
    journal.close()
    assert RunJournal(tmp_path).keys() == []


def test_the_log_is_compacted_and_keeps_the_open_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_module, "COMPACT_AFTER", 100)
    journal = RunJournal(tmp_path)
    journal.add("job.still-running")
    for i in range(1000):
        journal.add(f"job.{i}-n1")
        journal.remove(f"job.{i}-n1")
    assert len((tmp_path / journal_module.LOG_NAME).read_text().splitlines()) < 100
    assert RunJournal(tmp_path).keys() == ["job.still-running"]


def test_the_one_file_per_execution_journal_of_earlier_versions_is_read(tmp_path: Path) -> None:
    (tmp_path / "job.1-n1").touch()
    journal = RunJournal(tmp_path)
    assert journal.keys() == ["job.1-n1"]
    journal.remove("job.1-n1")
    assert RunJournal(tmp_path).keys() == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [journal_module.LOG_NAME]
