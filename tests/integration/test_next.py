"""GET /v1/jobs/{job}/next: upcoming fire instants with their UTC offsets, for saved and unsaved schedules."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from tests.harness import Node, executions, job, wait_for


def _next(server: Node, name: str, **params: Any) -> list[dict[str, str]]:
    response = server.get(f"/v1/jobs/{name}/next", params=params)
    assert response.status_code == 200, response.text
    fires: list[dict[str, str]] = response.json()
    return fires


def test_next_of_a_saved_job_in_its_zone(server: Node) -> None:
    server.post("/v1/jobs", json=job("next-berlin", "0 30 1 * * *", timezone="Europe/Berlin"))
    fires = _next(server, "next-berlin", n=3)
    assert len(fires) == 3
    for fire in fires:
        local = datetime.fromisoformat(fire["at"])
        assert (local.hour, local.minute) == (1, 30)
        assert fire["utc_offset"] in ("+01:00", "+02:00")
        assert fire["zone_abbreviation"] in ("CET", "CEST")
        assert datetime.fromisoformat(fire["utc"].replace("Z", "+00:00")) == local
    assert _next(server, "next-berlin")[:3] == fires  # n defaults to 10
    assert len(_next(server, "next-berlin")) == 10
    server.request("DELETE", "/v1/jobs/next-berlin")


def test_preview_of_an_unsaved_schedule_across_both_dst_transitions(server: Node) -> None:
    # 02:30 on 14 March 2027 does not exist in New York (clocks jump 02:00 -> 03:00): it fires at 03:00 EDT.
    gap = _next(server, "not-saved", schedule="0 30 2 14 3 *", timezone="America/New_York", n=1)
    assert gap == [
        {
            "at": "2027-03-14T03:00:00-04:00",
            "utc": "2027-03-14T07:00:00Z",
            "utc_offset": "-04:00",
            "zone_abbreviation": "EDT",
        }
    ]
    # 01:30 on 7 November 2027 happens twice (EDT, then EST): a fixed-hour spec fires once, at the first.
    overlap = _next(server, "not-saved", schedule="0 30 1 7 11 *", timezone="America/New_York", n=2)
    assert [f["at"] for f in overlap] == ["2027-11-07T01:30:00-04:00", "2028-11-07T01:30:00-05:00"]
    assert server.get("/v1/jobs/not-saved").status_code == 404


def test_next_matches_what_actually_fires(server: Node) -> None:
    server.post("/v1/jobs", json=job("next-real", "@every 2s"))
    predicted = [f["utc"] for f in _next(server, "next-real", n=2)]
    fired = wait_for(
        lambda: {e["scheduled_at"] for e in executions(server, "next-real")} >= set(predicted) or None,
        timeout=20,
        what="the predicted slots to fire",
    )
    assert fired
    server.request("DELETE", "/v1/jobs/next-real")


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ({"n": "0"}, 400, "n must be a whole number from 1 to 100"),
        ({"n": "101"}, 400, "n must be a whole number from 1 to 100"),
        ({"n": "ten"}, 400, "n must be a whole number from 1 to 100"),
        ({"schedule": "61 * * * * *"}, 400, ""),
        ({"schedule": "@every 1m", "timezone": "Mars/Olympus"}, 400, "unknown time zone Mars/Olympus"),
        ({"schedule": ""}, 400, "schedule is empty"),
        ({}, 404, ""),
    ],
)
def test_bad_next_requests(server: Node, params: dict[str, str], status: int, message: str) -> None:
    response = server.get("/v1/jobs/no-such-job/next", params=params)
    assert response.status_code == status, response.text
    assert message in response.text


def test_dst_policy_round_trips_and_changes_what_next_shows(server: Node) -> None:
    body = job("dst-job", "0 30 2 14 3 *", timezone="America/New_York", dst_policy={"gap": "skip"})
    created = server.post("/v1/jobs", json=body)
    assert created.status_code == 201, created.text
    stored = server.get("/v1/jobs/dst-job").json()
    assert stored["dst_policy"] == {"gap": "skip", "overlap": "default"}
    # 02:30 on 14 March does not exist in New York: skipped that year, so next is 2028.
    assert [f["at"] for f in _next(server, "dst-job", n=1)] == ["2028-03-14T02:30:00-04:00"]
    # What GET answers can be sent back as it is.
    assert (
        server.request(
            "PUT", "/v1/jobs/dst-job", json={**body, "dst_policy": stored["dst_policy"]}
        ).status_code
        == 201
    )
    plain = server.post("/v1/jobs", json=job("dst-plain", "@every 1m")).json()
    assert plain["dst_policy"] == {"gap": "default", "overlap": "default"}
    preview = _next(
        server, "x", schedule="0 30 1 7 11 *", timezone="America/New_York", dst_overlap="twice", n=2
    )
    assert [f["at"] for f in preview] == ["2027-11-07T01:30:00-04:00", "2027-11-07T01:30:00-05:00"]
    for name in ("dst-job", "dst-plain"):
        server.request("DELETE", f"/v1/jobs/{name}")


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"gap": "jump"}, 'invalid dst_policy.gap "jump"'),
        ({"overlap": "thrice"}, 'invalid dst_policy.overlap "thrice"'),
        ({"gap": 3}, "dst_policy.gap"),
    ],
)
def test_bad_dst_policies_are_refused(server: Node, policy: dict[str, Any], message: str) -> None:
    response = server.post("/v1/jobs", json=job("dst-bad", "@daily", dst_policy=policy))
    assert response.status_code == 400
    assert message in response.text
    assert server.get("/v1/jobs/dst-bad").status_code == 404
