"""Presence: whether a server's process is alive, known without waiting for its lease to expire.

Every server answers requests on `dkron.presence.<node>.<incarnation>` from its own NATS connection. When
that connection is gone (the process was killed, its embedded nats-server with it), NATS answers a request
there at once with "no responders". A process that is alive but stalled (SIGSTOP, a long pause) keeps its
subscription, so a request to it only times out, and a timeout never counts: the lease's TTL governs a
stalled holder. "No responders" PROBES_TO_CONFIRM times in a row, over at least CONFIRM_AFTER seconds,
confirm that the holder is gone (longer than a live holder's reconnect to another NATS server).
"""

from __future__ import annotations

import contextlib
import time

import anyio
from anyio.abc import TaskStatus
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError

from dkron_nats.leader.recent import Recent
from dkron_nats.subjects import presence_subject

PROBE_INTERVAL = 0.1
"""How often a server asks whether the lease holder is there: often, since a verdict waits for the first
probe after the death and then CONFIRM_AFTER more (a few requests a second per server cost nothing)."""
PROBE_TIMEOUT = 0.15
"""A probe unanswered this long gives no verdict and the next one is sent. Short: a probe sent just as the
holder dies can be routed to its dying nats-server and never be answered, and the verdict waits for it."""
CONFIRM_AFTER = 0.6
PROBES_TO_CONFIRM = 6
FRESH_FOR = PROBE_INTERVAL / 2
"""A verdict this recent is given again without asking: the campaigns of all partitions a holder holds share
one probe."""
KNOWN_HOLDERS = 64


class Presence:
    """This server's own presence: answered while its connection lives."""

    def __init__(self, nc: Client, node: str, incarnation: str) -> None:
        self.nc = nc
        self.subject = presence_subject(node, incarnation)

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        sub = await self.nc.subscribe(self.subject, cb=_answer)
        task_status.started()
        try:
            await anyio.sleep_forever()
        finally:
            with anyio.move_on_after(2, shield=True), contextlib.suppress(NatsError):
                await sub.unsubscribe()


async def _answer(msg: Msg) -> None:
    with contextlib.suppress(NatsError):
        await msg.respond(b"")


class Absence:
    """Another server's presence, asked again and again: whether it is confirmed gone."""

    def __init__(self, nc: Client, node: str, incarnation: str) -> None:
        self.nc = nc
        self.subject = presence_subject(node, incarnation)
        self._missing = 0
        self._missing_since = 0.0
        self._verdict = Recent(self._ask, FRESH_FOR)

    async def confirmed(self) -> bool:
        """True once the holder has been missing long enough: asks once, unless it was just asked."""
        return await self._verdict.get()

    def confirmed_for(self) -> float:
        """Seconds since the holder's absence was confirmed (0 while it is not)."""
        if self._missing < PROBES_TO_CONFIRM:
            return 0.0
        return max(0.0, time.monotonic() - self._missing_since - CONFIRM_AFTER)

    def heard_from(self) -> None:
        """The holder wrote (renewed a lease): it is there, whatever the probes said so far."""
        self._missing = 0

    async def _ask(self) -> bool:
        try:
            await self.nc.request(self.subject, b"", timeout=PROBE_TIMEOUT)
        except NoRespondersError:
            now = time.monotonic()
            if not self._missing:
                self._missing_since = now
            self._missing += 1
            return self._missing >= PROBES_TO_CONFIRM and now - self._missing_since >= CONFIRM_AFTER
        except (NatsError, TimeoutError):
            pass  # there but slow, or this server's own connection is down: no verdict either way
        self._missing = 0
        return False


class Absences:
    """One `Absence` per holder process, shared by the campaigns of every partition: a server asks a holder
    once per probe however many partitions that holder has."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self._known: dict[str, Absence] = {}

    def of(self, node: str, incarnation: str) -> Absence:
        subject = presence_subject(node, incarnation)
        absence = self._known.get(subject)
        if absence is None:
            if len(self._known) >= KNOWN_HOLDERS:  # processes long gone: forget them all, cheaply
                self._known.clear()
            absence = self._known[subject] = Absence(self.nc, node, incarnation)
        return absence
