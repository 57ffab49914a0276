"""The delay before each retry: exponential, capped, fixed with multiplier 1, and deterministic jitter."""

from __future__ import annotations

from datetime import timedelta

from dkron_nats.models import RetryBackoff
from dkron_nats.retry import retry_delay


def _seconds(backoff: RetryBackoff | None, attempt: int, exec_id: str = "1-n1") -> float:
    return retry_delay(backoff, attempt, exec_id).total_seconds()


def test_without_a_backoff_a_retry_goes_at_once() -> None:
    assert retry_delay(None, 3, "1-n1") == timedelta(0)


def test_exponential_growth_up_to_the_cap() -> None:
    backoff = RetryBackoff(initial="1s", max="5s", multiplier=2, jitter=False)
    assert [_seconds(backoff, n) for n in (1, 2, 3, 4, 5)] == [1, 2, 4, 5, 5]


def test_multiplier_one_is_a_fixed_delay() -> None:
    backoff = RetryBackoff(initial="30s", max="5m", multiplier=1, jitter=False)
    assert {_seconds(backoff, n) for n in range(1, 8)} == {30}


def test_a_huge_attempt_number_stays_at_the_cap() -> None:
    backoff = RetryBackoff(initial="1s", max="1h", multiplier=100, jitter=False)
    assert _seconds(backoff, 10_000) == 3600


def test_jitter_stays_within_half_to_full_and_is_the_same_for_the_same_execution() -> None:
    backoff = RetryBackoff(initial="10s", max="10m", multiplier=2, jitter=True)
    delays = {_seconds(backoff, 2, f"{i}-n1") for i in range(50)}
    assert all(10 <= d <= 20 for d in delays)
    assert len(delays) > 40, "jitter should spread executions apart"
    assert _seconds(backoff, 2, "7-n1") == _seconds(backoff, 2, "7-n1")
