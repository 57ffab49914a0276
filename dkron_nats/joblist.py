"""Filtering, sorting and paging jobs (the react-admin list protocol) over the in-memory job cache.

With 100,000 jobs a pass over all of them costs about 90 ms in Python, so pages are cut from maintained
orders and indexes instead (see JobLister).
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from dkron_nats.errors import DkronError
from dkron_nats.jobs import SORTABLE, JobService, JobView
from dkron_nats.models import JobSpec, JobState
from dkron_nats.nextfire import NextFireCache
from dkron_nats.timefmt import to_ns

P = TypeVar("P")
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


def _tag_values(tags: dict[str, str] | None) -> dict[str, str]:
    """A job's tags as filters match them: the value without its `:count`."""
    return {k: v.partition(":")[0] for k, v in (tags or {}).items()}


def _page(order: Sequence[P], query: JobQuery) -> list[P]:
    """The query's page of `order` (counted from the end when descending), without copying the rest."""
    total = len(order)
    start = max(query.start, 0)
    end = total if query.end is None else min(query.end, total)
    if query.descending:
        return [order[total - 1 - i] for i in range(start, end)]
    return list(order[start:end])


def _discard(index: dict[tuple[str, str], set[str]], pair: tuple[str, str], key: str) -> None:
    keys = index.get(pair)
    if keys is not None:
        keys.discard(key)
        if not keys:
            del index[pair]


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
    """Lists pages of jobs without a pass over every job where an index can answer.

    - the name order (the default sort) is kept sorted as jobs come and go: names never change, so
      updates do not touch it;
    - other orders are rebuilt when what they sort on changed (state-based ones, whenever a job ran);
    - `metadata[k]=v` and `tags[k]=v` filters start from an index of (key, value) -> jobs, so only the
      matching jobs are sorted;
    - an unfiltered page is a slice of the order: no pass at all.
    """

    def __init__(self, service: JobService, nexts: NextFireCache) -> None:
        self.service = service
        self.nexts = nexts
        self._orders: dict[str, tuple[tuple[int, int], list[str]]] = {}
        self._by_name: list[tuple[str, str, str]] = []
        """(ASCII-lowercased name, name, key), sorted: the default order, maintained incrementally."""
        self._metadata: dict[tuple[str, str], set[str]] = defaultdict(set)
        self._tags: dict[tuple[str, str], set[str]] = defaultdict(set)
        self._indexed: dict[str, JobSpec] = {}
        self._haystack: tuple[int, list[tuple[str, str]]] = (-1, [])
        """(jobs version, [(key, "name\\ndisplayname")] in name order), rebuilt when jobs changed."""
        for key, spec in service.jobs.items():
            self._index(key, spec)
        service.jobs.listen(self._index)

    def _index(self, key: str, spec: JobSpec | None) -> None:
        old = self._indexed.pop(key, None)
        if old is not None:
            for pair in (old.metadata or {}).items():
                _discard(self._metadata, pair, key)
            for pair in _tag_values(old.tags).items():
                _discard(self._tags, pair, key)
            if spec is None:
                entry = (old.name.translate(_ASCII_LOWER), old.name, key)
                i = bisect.bisect_left(self._by_name, entry)
                if i < len(self._by_name) and self._by_name[i] == entry:
                    del self._by_name[i]
        if spec is None:
            return
        if old is None:
            bisect.insort(self._by_name, (spec.name.translate(_ASCII_LOWER), spec.name, key))
        self._indexed[key] = spec
        for pair in (spec.metadata or {}).items():
            self._metadata[pair].add(key)
        for pair in _tag_values(spec.tags).items():
            self._tags[pair].add(key)

    def _sort_key(self, attr: str, key: str) -> tuple[Any, str, str]:
        spec = self._indexed[key]
        state = self.service.states.get(key) or JobState()
        nxt = self.nexts.get(spec) if attr == "next" else None
        return _sort_value(attr, spec, state, nxt), spec.name, key

    def _order(self, attr: str) -> list[str]:
        if attr == "name":
            return [key for _, _, key in self._by_name]
        on_state = attr not in ("displayname", "schedule")
        version = (self.service.jobs.version, self.service.states.version if on_state else 0)
        cached = self._orders.get(attr)
        if cached is not None and cached[0] == version and attr != "next":
            return cached[1]
        order = sorted(self._indexed, key=lambda key: self._sort_key(attr, key))
        self._orders[attr] = (version, order)
        return order

    def _name_page(self, query: JobQuery) -> tuple[int, list[JobView]]:
        """The default listing: a slice of the maintained name order, nothing else touched."""
        entries = _page(self._by_name, query)
        return len(self._by_name), [self.service.view(self._indexed[key]) for _, _, key in entries]

    def _search(self, q: str) -> list[str]:
        """Jobs whose name or display name contains `q`, in name order (one substring test per job)."""
        if "\n" in q:  # could span the separator below: test the two fields apart
            jobs = self._indexed
            return [key for _, _, key in self._by_name if q in jobs[key].name or q in jobs[key].displayname]
        version = self.service.jobs.version
        if self._haystack[0] != version:
            jobs = self._indexed
            text = [(key, f"{jobs[key].name}\n{jobs[key].displayname}") for _, _, key in self._by_name]
            self._haystack = (version, text)
        return [key for key, text in self._haystack[1] if q in text]

    def _ordered(self, attr: str, candidates: set[str] | None, found: list[str] | None) -> list[str]:
        """The keys that pass the indexed filters and the search, in `attr` order."""
        if found is not None and candidates is None and attr == "name":
            return found  # already in name order
        if found is not None:
            candidates = set(found) if candidates is None else candidates & set(found)
        if candidates is None:
            return self._order(attr)
        if len(candidates) > len(self._indexed) // 4:  # most jobs: filtering the order is cheaper
            return [key for key in self._order(attr) if key in candidates]
        return sorted(candidates, key=lambda key: self._sort_key(attr, key))

    def _indexed_candidates(self, query: JobQuery) -> set[str] | None:
        """The jobs every metadata and tag filter allows (None: no such filter)."""
        found: set[str] | None = None
        wanted = [(self._metadata, pair) for pair in query.metadata.items()]
        wanted += [(self._tags, pair) for pair in query.tags.items()]
        for index, pair in wanted:
            keys = index.get(pair, set())
            found = set(keys) if found is None else found & keys
        return found

    def list(self, query: JobQuery) -> tuple[int, list[JobView]]:
        attr = SORTABLE.get(query.sort)
        if attr is None:
            raise BadSortError(query.sort)
        candidates = self._indexed_candidates(query)
        unfiltered = candidates is None and not query.q and query.status is None and query.disabled is None
        if unfiltered and attr == "name":
            return self._name_page(query)
        order = self._ordered(attr, candidates, self._search(query.q) if query.q else None)
        if query.status is not None or query.disabled is not None:
            matches = self._matcher(query)
            states = self.service.states
            order = [k for k in order if matches(self._indexed[k], states.get(k) or JobState())]
        keys = _page(order, query)
        return len(order), [self.service.view(self._indexed[k]) for k in keys]

    @staticmethod
    def _matcher(query: JobQuery) -> Callable[[JobSpec, JobState], bool]:
        """The filters no index answers: status and disabled."""
        status = "" if query.status == "untriggered" else query.status

        def matches(spec: JobSpec, state: JobState) -> bool:
            if status is not None and state.status != status:
                return False
            return query.disabled is None or str(spec.disabled).lower() == query.disabled

        return matches
