"""Run requests are signed by the lease holder; agents verify them against the key the lease names."""

from __future__ import annotations

from typing import cast

import pytest
from nacl.signing import VerifyKey
from nats.js.kv import KeyValue

from dkron_nats.leader.lease import Lease, SignedHere, signature_refusal

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


def test_a_request_signed_in_this_process_is_accepted_without_an_ed25519_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The agent of `agent --server` checks its own leader's requests by memory, not by Ed25519: the
    check is about a tenth of the node's CPU per execution. A request it did not see signed is checked."""
    leader = _lease("s1")
    signature = leader.sign(BODY)
    checked: list[bytes] = []
    real_verify = VerifyKey.verify

    def counting_verify(self: VerifyKey, smessage: bytes, signature: bytes | None = None) -> bytes:
        checked.append(smessage)
        return real_verify(self, smessage, signature)

    monkeypatch.setattr(VerifyKey, "verify", counting_verify)
    assert signature_refusal(leader.public_key, BODY, signature) == ""
    assert checked == [], "a request signed here was checked by Ed25519"
    assert signature_refusal(leader.public_key, BODY, signature) == ""  # delivered again: checked for real
    assert checked == [BODY]


def test_what_a_process_remembers_of_its_signatures_matches_signature_key_and_body_and_is_bounded() -> None:
    leader, other = _lease("s1"), _lease("s2")
    signed = SignedHere(kept=2)
    signed.remember("sig-1", leader.public_key, BODY)
    assert not signed.vouches_for("sig-1", other.public_key, BODY), "vouched for another key"
    signed.remember("sig-1", leader.public_key, BODY)
    assert not signed.vouches_for("sig-1", leader.public_key, BODY + b" "), "vouched for another body"
    for n in range(3):
        signed.remember(f"sig-{n}", leader.public_key, BODY)
    assert not signed.vouches_for("sig-0", leader.public_key, BODY), "kept more than its bound"
    assert signed.vouches_for("sig-2", leader.public_key, BODY)
