"""Token buckets: how many runs and job changes each caller may make (429 with `Retry-After` above it).

A caller is its token's name with `--auth`, else its client address. Each has a bucket that holds at most
`burst` tokens and refills at `rate` per second; a run or a job change takes one. The limit is checked by a
guard, after authentication and before the body is read, so a refused request changes nothing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import TooManyRequestsException
from litestar.handlers import BaseRouteHandler
from litestar.types import Guard

from dkron_nats.auth import READ_METHODS, Principal

MAX_CALLERS = 10_000
"""Buckets kept at most; a full bucket is the same as none, so those are dropped first."""
LIMITED_PREFIXES = ("/v1/jobs", "/v1/restore")


def is_limited(method: str, path: str) -> bool:
    """A run or a job change: every method but GET and HEAD on /v1/jobs... and /v1/restore."""
    return method not in READ_METHODS and method != "OPTIONS" and path.startswith(LIMITED_PREFIXES)


class TokenBucket:
    """`burst` tokens at most, `rate` more each second."""

    __slots__ = ("burst", "rate", "tokens", "updated")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.updated = now

    def take(self, now: float) -> float:
        """0 when a token was taken; otherwise the seconds until one will be there (nothing taken)."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate

    def full(self, now: float) -> bool:
        return self.tokens + (now - self.updated) * self.rate >= self.burst


class RateLimiter:
    """One token bucket per caller; `rate` 0 turns the limit off."""

    def __init__(
        self,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        max_callers: int = MAX_CALLERS,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._max_callers = max_callers
        self._buckets: dict[str, TokenBucket] = {}

    def wait(self, caller: str) -> float:
        """Take one for `caller`: 0 when allowed, else the seconds to wait before asking again."""
        if self.rate <= 0:
            return 0.0
        now = self._clock()
        bucket = self._buckets.get(caller)
        if bucket is None:
            if len(self._buckets) >= self._max_callers:
                self._forget_some(now)
            bucket = self._buckets[caller] = TokenBucket(self.rate, self.burst, now)
        return bucket.take(now)

    def _forget_some(self, now: float) -> None:
        """Drop the full buckets (nobody used them lately), or else the oldest half."""
        full = [caller for caller, bucket in self._buckets.items() if bucket.full(now)]
        if len(full) < self._max_callers // 2:
            full = list(self._buckets)[: self._max_callers // 2]
        for caller in full:
            del self._buckets[caller]


def caller_of(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """The token's name when there is one (set by the auth guard), else the client address."""
    user = connection.scope.get("user")
    if isinstance(user, Principal):
        return f"token {user.name}"
    client = connection.scope.get("client")
    return f"address {client[0]}" if client else "address unknown"


def rate_guard(limiter: RateLimiter) -> Guard:
    """429 with `Retry-After` (whole seconds) when the caller has used up its runs and job changes."""

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        if not is_limited(str(connection.scope.get("method", "GET")), connection.scope["path"]):
            return
        caller = caller_of(connection)
        wait = limiter.wait(caller)
        if wait > 0:
            raise TooManyRequestsException(
                detail=f"too many runs and job changes by {caller}: the limit is "
                f"{limiter.rate:g}/s with bursts of {limiter.burst} (--rate-limit-runs, "
                "--rate-limit-burst); retry after Retry-After seconds",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )

    return guard
