"""Run requests are signed by the lease holder; agents verify them against the key the lease names."""

from __future__ import annotations

from typing import cast

from nats.js.kv import KeyValue

from dkron_nats.leader.lease import Lease, signature_refusal

BODY = b'{"execution": {"job_name": "backup", "fence": 7}}'


def _lease(node: str) -> Lease:
    return Lease(cast(KeyValue, None), node, "incarnation", ttl=15)


def test_a_request_signed_by_the_lease_holder_is_accepted() -> None:
    leader = _lease("s1")
    assert signature_refusal(leader.public_key, BODY, leader.sign(BODY)) == ""


def test_a_changed_request_another_holders_signature_and_no_signature_are_refused() -> None:
    leader, deposed = _lease("s1"), _lease("s2")
    signature = leader.sign(BODY)
    tampered = BODY.replace(b"backup", b"wipe-disk")
    assert "not signed by it" in signature_refusal(leader.public_key, tampered, signature)
    assert "not signed by it" in signature_refusal(deposed.public_key, BODY, signature)
    assert "not signed by it" in signature_refusal(leader.public_key, BODY, "bm9pc2U=")
    assert "not signed by it" in signature_refusal(leader.public_key, BODY, "%%%")
    assert "not signed" in signature_refusal(leader.public_key, BODY, None)


def test_a_lease_without_a_key_signs_nothing_an_agent_accepts() -> None:
    leader = _lease("s1")
    assert "names no signing key" in signature_refusal("", BODY, leader.sign(BODY))


def test_every_holder_has_a_key_of_its_own() -> None:
    assert _lease("s1").public_key != _lease("s1").public_key
