"""Member records for tests that give components a registry of their own."""

from __future__ import annotations

from datetime import datetime

from dkron_nats.models import Member
from dkron_nats.timefmt import utcnow


def server_member(name: str, started_at: datetime | None = None, running: list[str] | None = None) -> Member:
    """Server `name`'s heartbeat record: started now (or at `started_at`), running `running`."""
    return Member(
        name=name,
        addr="127.0.0.1",
        port=0,
        tags={},
        server=True,
        version="t",
        started_at=started_at or utcnow(),
        running=running or [],
    )
