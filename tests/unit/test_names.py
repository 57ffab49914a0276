"""Names that become subject tokens and KV keys."""

from __future__ import annotations

import pytest

from dkron_nats.names import is_job_key, is_token, job_key, job_name_error, job_name_from_key


@pytest.mark.parametrize("name", ["job1", "a-b_c", "ß-straße", "ωμέγα", "x" * 200])
def test_valid_names_round_trip_through_one_safe_key(name: str) -> None:
    assert job_name_error(name) is None
    key = job_key(name)
    assert is_job_key(key)
    assert not set(key) & set(".*> ")
    assert job_name_from_key(key) == name


@pytest.mark.parametrize("name", ["", "Job", "a b", "a.b", "a*", "a>", "$SYS", "日本", "x" * 201])
def test_invalid_names_are_refused(name: str) -> None:
    assert job_name_error(name) is not None


@pytest.mark.parametrize("text", ["web", "eu-west_1", "A9"])
def test_tokens(text: str) -> None:
    assert is_token(text)


@pytest.mark.parametrize("text", ["", "a.b", "*", ">", "$SYS", "a b", "x" * 65, "ü"])
def test_non_tokens(text: str) -> None:
    assert not is_token(text)


@pytest.mark.parametrize("text", ["", "=", "=0", "=zz", "A", "a.b", ">", "$KV"])
def test_non_job_keys(text: str) -> None:
    assert not is_job_key(text)
