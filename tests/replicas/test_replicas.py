"""Many replicas, one truth: revocations, rate limits and keys shared through Redis, across three
real gateway processes behind one real Envoy, with three real signers following Redis too.

The tests run in file order on one stack: the last one kills Redis.
"""

from __future__ import annotations

import json
import time

from envoy.service.auth.v3.external_auth_pb2 import CheckResponse

from signer.coordinator import SigningRefused
from tests.extauthz.stack import check_request
from tests.replicas.stack import (
    REPLICAS,
    ReplicasStack,
)

REVOCATION_BOUND_SECONDS = 1.0


def outcome(response: CheckResponse) -> tuple[int, str]:
    """(200, "ok") for an allow, else the HTTP status and keymint's reason."""
    if response.status.code == 0:
        return 200, "ok"
    body = json.loads(response.denied_response.body or "{}")
    return response.denied_response.status.code, str(body.get("error", ""))


def test_a_revocation_through_one_replica_is_refused_by_every_replica_and_signer_within_1s(
    stack: ReplicasStack,
) -> None:
    svid = stack.svid("/ns/shop/sa/revoked-web")
    subject = "spiffe://prod.test/ns/shop/sa/revoked-web"
    request = check_request(certificate=svid, route_key="orders")
    # Every replica serves the caller, from its hot cache after the first Check.
    for replica in range(REPLICAS):
        for _ in range(2):
            assert outcome(stack.check(replica, request)) == (200, "ok")
    rogue = stack.rogue(svid)
    try:
        kid = active_kid(stack)
        for pair in rogue.PAIRS:  # the control: before the revocation, every pair signs
            signed = rogue.sign(pair, kid)
            assert not isinstance(signed, BaseException), signed

        started = time.monotonic()
        status, answer = stack.revoke(0, subject=subject, until=time.time() + 3600)
        assert status == 200, answer
        refused_after: dict[str, float] = {}
        pending = {f"replica {r + 1}": r for r in range(REPLICAS)}
        while pending and time.monotonic() - started < 5:
            for name, replica in list(pending.items()):
                if outcome(stack.check(replica, request)) == (403, "subject_revoked"):
                    refused_after[name] = time.monotonic() - started
                    del pending[name]
        # The signers: asked directly with the coordinator's credentials (as a gateway that
        # ignored the revocation would), every pair refuses, each signer citing the rule.
        refusals: dict[int, str] = {}
        for pair in rogue.PAIRS:
            result = rogue.sign(pair, kid)
            assert isinstance(result, SigningRefused), result
            refusals.update(result.refusals)
        refused_after["signers 1, 2 and 3"] = time.monotonic() - started
    finally:
        rogue.close()
    assert not pending, f"still serving a revoked subject: {sorted(pending)}"
    assert set(refusals) == {1, 2, 3}
    assert all("subject_revoked" in rule for rule in refusals.values()), refusals
    print(f"seconds from the revocation to refusal: {refused_after}")
    assert max(refused_after.values()) <= REVOCATION_BOUND_SECONDS, refused_after
    # Through Envoy, whichever replica answers.
    for _ in range(2 * REPLICAS):
        reply = stack.front_call("GET", "/orders/v1/orders", certificate=svid)
        assert reply.status == 403, reply.body


def active_kid(stack: ReplicasStack, replica: int = 0) -> str:
    status, _, body = stack.http(replica, "GET", "/admin/keys")
    assert status == 200, body
    kid: str = json.loads(body)["active"]
    return kid
