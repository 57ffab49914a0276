"""Which server owns which partition of the job space.

Every server computes the same assignment from the registry's live servers: each partition ranks the servers
by a hash of (partition, server) (rendezvous hashing), and goes to the best-ranked one that still has room,
so that every server owns ⌊P/n⌋ or ⌈P/n⌉ partitions. A change of the live servers moves few partitions.
While the live servers are those of the cluster's partition plan (balance.py: the owner of partition 0
balances the partitions by their jobs), the plan says instead.

The assignment only says who should hold a partition's lease; the lease itself (a compare-and-set on a KV
key) says who does, so servers that briefly disagree (one has seen a join the other has not) cost a delay,
never a second owner:
- a free lease is taken at once by its assignee, and by the others one after another (`STAGGER` apart, in
  the partition's ranking), so a partition whose assignee is not there yet still gets an owner;
- a holder hands a partition over (stop, record, release) once its assignee has been up for `WARM_UP`
  (its caches and decision logs are followed by then) and it has held the partition that long itself;
- a holder that is gone (presence.py) is replaced by the assignee of the servers that remain, at once, and
  by the others one after another (`STAGGER` apart) if that assignee has not done it: a server whose view
  of the live servers differs would otherwise leave the partition to its lease's TTL.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from dkron_nats.members import Registry
from dkron_nats.models import PartitionPlan
from dkron_nats.subjects import Partition
from dkron_nats.timefmt import utcnow

WARM_UP = 10.0
"""Seconds a joining server is up before partitions move to it, and a holder keeps a partition it took."""
STAGGER = 0.3
"""Seconds between the campaigns of successive servers of a partition's ranking for its free lease."""


def _score(partition: int, node: str) -> bytes:
    return hashlib.blake2b(f"{partition}/{node}".encode(), digest_size=8).digest()


def ranking(partition: int, servers: Sequence[str]) -> list[str]:
    """The servers in the order this partition prefers them."""
    return sorted(servers, key=lambda node: (_score(partition, node), node), reverse=True)


def assign(count: int, servers: Sequence[str], plan: PartitionPlan | None = None) -> dict[int, str]:
    """Each partition's owner: as `plan` says if it is a plan for exactly these servers; otherwise its
    best-ranked server among those with room (⌊P/n⌋, and ⌈P/n⌉ for the first P mod n servers to reach
    it), so the load differs by at most one partition between servers."""
    ordered = sorted(servers)
    if plan is not None and plan.servers == ordered and len(plan.owners) == count:
        return dict(enumerate(plan.owners))
    return dict(_assignment(count, tuple(ordered)))


@functools.lru_cache(maxsize=32)
def _assignment(count: int, servers: tuple[str, ...]) -> tuple[tuple[int, str], ...]:
    """`assign` for one set of servers, computed once: every partition's election loop asks for it several
    times a second, and the live servers seldom change."""
    if not servers:
        return ()
    fair, spare = divmod(count, len(servers))
    load: Counter[str] = Counter()
    owners: dict[int, str] = {}
    for partition in range(count):
        for node in ranking(partition, servers):
            room = load[node] < fair or (load[node] == fair and spare > 0)
            if room:
                if load[node] == fair:
                    spare -= 1
                load[node] += 1
                owners[partition] = node
                break
    return tuple(owners.items())


def live_servers(registry: Registry, me: str, without: str = "") -> list[str]:
    """The servers partitions are assigned over, as server `me` sees them: the live ones not leaving, and
    itself (but not `without`)."""
    live = {m.name for m in registry.alive() if m.server and not m.leaving and m.name != without}
    return sorted(live | ({me} if me != without else set()))


class Ownership:
    """What one server may do about one partition's lease (the protocol election.py asks)."""

    def campaign_delay(self) -> float:
        """How long the lease must have been free before this server tries to take it."""
        return 0.0

    def may_steal(self, gone: str, confirmed_for: float) -> bool:
        """Whether this server takes the lease over from `gone`, a holder confirmed gone `confirmed_for`
        seconds ago."""
        return True

    def hand_over(self) -> bool:
        """Whether this server, holding the lease, should give it to the partition's assignee now."""
        return False

    def took(self) -> None:
        """This server has just taken the lease."""


@dataclass
class Spread(Ownership):
    """A partition of a cluster of several, owned as the assignment over the live servers says."""

    partition: Partition
    me: str
    registry: Registry
    clock: Callable[[], float] = time.monotonic
    plan: Callable[[], PartitionPlan | None] = lambda: None
    """The cluster's partition plan as this server last saw it (none: the plain assignment)."""
    _taken_at: float = field(default=0.0, init=False)

    def _servers(self, without: str = "") -> list[str]:
        return live_servers(self.registry, self.me, without)

    def assignee(self, without: str = "") -> str:
        return assign(self.partition.count, self._servers(without), self.plan()).get(self.partition.index, "")

    def _turn(self, servers: list[str]) -> float:
        """How long after the lease is free (or its holder confirmed gone) this server of `servers` steps
        in: the assignee at once, the others STAGGER apart in the partition's ranking."""
        if assign(self.partition.count, servers, self.plan()).get(self.partition.index) == self.me:
            return 0.0
        return STAGGER * (1 + ranking(self.partition.index, servers).index(self.me))

    def campaign_delay(self) -> float:
        return self._turn(self._servers())

    def may_steal(self, gone: str, confirmed_for: float) -> bool:
        servers = self._servers(without=gone)
        if self.me not in servers:
            return False  # `gone` is this node's previous process: the others take over from it
        return confirmed_for >= self._turn(servers)

    def hand_over(self) -> bool:
        if self.clock() - self._taken_at < WARM_UP:
            return False
        owner = self.assignee()
        if owner in ("", self.me):
            return False
        member = self.registry.get(owner)
        return member is not None and utcnow() - member.started_at >= timedelta(seconds=WARM_UP)

    def took(self) -> None:
        self._taken_at = self.clock()
