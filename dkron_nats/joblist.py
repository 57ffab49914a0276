"""Filtering, sorting and paging jobs (the react-admin list protocol) over the in-memory job cache.

The sorted order per sort field is cached and rebuilt only when a job or its state changed, so one page of
a large job set costs one pass over the filter, not a sort per request.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from dkron_nats.errors import DkronError
from dkron_nats.jobs import SORTABLE, JobService, JobView
from dkron_nats.models import JobSpec, JobState
from dkron_nats.nextfire import NextFireCache
from dkron_nats.timefmt import to_ns

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_NO_TIME = (0, 0)
"""Sorts before every timestamp: jobs that never ran (or have no `next`) come first in ascending order."""


class BadSortError(DkronError):
    def __init__(self, field_name: str) -> None:
        allowed = ", ".join(sorted(SORTABLE))
        super().__init__(f"cannot sort by {field_name!r}: _sort must be one of {allowed}")


@dataclass(frozen=True, slots=True)
class JobQuery:
    q: str = ""
    status: str | None = None
    disabled: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)
    """Tag filters: a job matches when its tag's value (without the `:count`) is the one asked for."""
    sort: str = "id"
    descending: bool = False
    start: int = 0
    end: int | None = None


def _sort_value(attr: str, spec: JobSpec, state: JobState, nxt: datetime | None) -> Any:
    """Dkron's BuntDB `IndexJSON` order: strings ignore ASCII case; times compare as instants."""
    if attr in ("name", "displayname", "schedule"):
        text: str = getattr(spec, attr)
        return text.translate(_ASCII_LOWER)
    if attr in ("success_count", "error_count"):
        return getattr(state, attr)
    if attr == "status":
        return state.status
    value = nxt if attr == "next" else getattr(state, attr)
    return _NO_TIME if value is None else (1, to_ns(value))


class JobLister:
    def __init__(self, service: JobService, nexts: NextFireCache) -> None:
        self.service = service
        self.nexts = nexts
        self._orders: dict[str, tuple[tuple[int, int], list[str]]] = {}

    def _order(self, attr: str) -> list[str]:
        version = (self.service.jobs.version, self.service.states.version)
        cached = self._orders.get(attr)
        if cached is not None and cached[0] == version and attr != "next":
            return cached[1]
        keyed = []
        for key, spec in self.service.jobs.items():
            state = self.service.states.get(key) or JobState()
            nxt = self.nexts.get(spec) if attr == "next" else None
            keyed.append((_sort_value(attr, spec, state, nxt), spec.name, key))
        keyed.sort()
        order = [key for _, _, key in keyed]
        self._orders[attr] = (version, order)
        return order

    def list(self, query: JobQuery) -> tuple[int, list[JobView]]:
        attr = SORTABLE.get(query.sort)
        if attr is None:
            raise BadSortError(query.sort)
        order = self._order(attr)
        if query.descending:
            order = order[::-1]
        matches = self._matcher(query)
        start = max(query.start, 0)
        end = query.end
        total = 0
        page: list[JobView] = []
        for key in order:
            spec = self.service.jobs.get(key)
            if spec is None:
                continue
            state = self.service.states.get(key) or JobState()
            if not matches(spec, state):
                continue
            if start <= total and (end is None or total < end):
                page.append(self.service.view(spec))
            total += 1
        return total, page

    @staticmethod
    def _matcher(query: JobQuery) -> Callable[[JobSpec, JobState], bool]:
        status = "" if query.status == "untriggered" else query.status
        wanted_meta = dict(query.metadata)
        wanted_tags = dict(query.tags)

        def matches(spec: JobSpec, state: JobState) -> bool:
            if query.q and query.q not in spec.name and query.q not in spec.displayname:
                return False
            if status is not None and state.status != status:
                return False
            if query.disabled is not None and str(spec.disabled).lower() != query.disabled:
                return False
            if wanted_tags:
                tags = spec.tags or {}
                if not all(tags.get(k, "").partition(":")[0] == v for k, v in wanted_tags.items()):
                    return False
            if wanted_meta:
                meta = spec.metadata or {}
                return all(meta.get(k) == v for k, v in wanted_meta.items())
            return True

        return matches
