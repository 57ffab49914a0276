"""When a failed attempt is retried: Dkron retries at once; `retry_backoff` spaces the attempts out.

The delay after attempt n is `initial * multiplier**(n-1)`, capped at `max` (a multiplier of 1 gives a
fixed delay). With `jitter`, it is drawn from [delay/2, delay] ("equal jitter"), so that many jobs failing
together do not retry in lockstep. The draw is a hash of the execution id, not a random number: a leader
that takes over computes the same instant for the same pending retry.
"""

from __future__ import annotations

import zlib
from datetime import timedelta

from dkron_nats.durations import parse_duration
from dkron_nats.models import RetryBackoff


def retry_delay(backoff: RetryBackoff | None, failed_attempt: int, execution_id: str) -> timedelta:
    if backoff is None:
        return timedelta(0)
    initial, cap = parse_duration(backoff.initial), parse_duration(backoff.max)
    growth = backoff.multiplier ** min(failed_attempt - 1, 64)  # bounded: the cap applies long before
    delay = min(cap, initial * growth) if growth < 1e12 else cap
    if backoff.jitter:
        fraction = zlib.crc32(execution_id.encode()) / 0xFFFFFFFF
        delay = delay / 2 + delay / 2 * fraction
    return delay
