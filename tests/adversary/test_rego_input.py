"""The gateway as the attacker, with a Rego policy that reads the request: its body, its headers,
what identifies it. Real signer processes run the same policy on what the evidence carries.

The attacker holds the gateway's keys, configuration and code (see test_guard.py). What the
evidence says about the request is the gateway's word, so the rules here are about what a gateway
can NOT do with it: have the signers fill in what it left out, make their policy read a credential
header or a per-request value the operator did not let policy read, or slip in attributes the
signers cannot read exactly.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from extauthz.dev.calls import check_request
from extauthz.dev.inprocess import Stack, running_stack
from extauthz.dev.settings import ISSUER
from extauthz.model import Route
from extauthz.policy import AuthzRequest, Denial, RequestAttributes
from extauthz.server.claims import provenance_claims
from extauthz.server.mint import evidence_message
from signer.token import header_for
from tests.adversary.test_guard import Attacker, Forgery

# Allows small payments only, and only while it can see no cookie and no request id: the
# operator let this policy read neither, so no evidence may show it either.
PAYMENTS = """
package envoy.authz

import rego.v1

default allow := false

allow if {
    input.parsed_body.amount < 100
    not input.attributes.request.http.headers.cookie
    not input.attributes.request.http.id
}
"""
ROUTE = Route("api.internal", "/v1/payments", "POST", {"route": "deploy"})
JSON = {"content-type": "application/json"}
SMALL = RequestAttributes(body='{"amount": 5}', source_address="10.0.0.1")


@dataclass
class Arena:
    runner: asyncio.Runner
    stack: Stack
    attacker: Attacker

    def run(self, coroutine: Any) -> Any:
        return self.runner.run(coroutine)

    def forge(self, headers: dict[str, str], attributes: RequestAttributes) -> Forgery:
        """What an honest gateway sends for a small payment, then the request described by
        `headers` and `attributes` in its evidence instead."""
        token = self.stack.issuer.mint({"jti": str(uuid.uuid4())})
        assert self.attacker.identifier.oidc is not None
        identity = self.run(self.attacker.identifier.oidc.verify(token))
        honest = AuthzRequest(identity, ROUTE, headers=JSON, attributes=SMALL)
        snapshot = self.attacker.engine.snapshot()
        grant = self.attacker.engine.evaluate(honest, snapshot)
        assert not isinstance(grant, Denial), grant
        now = int(time.time())
        claims: dict[str, Any] = {
            **provenance_claims(identity),
            "iss": ISSUER,
            "sub": identity.subject,
            "aud": grant.audience,
            "scope": " ".join(grant.scopes),
            "iat": now,
            "nbf": now,
            "exp": now + min(grant.ttl_seconds, identity.expires_at - now),
            "jti": str(uuid.uuid4()),
        }
        described = AuthzRequest(identity, ROUTE, headers=headers, attributes=attributes)
        # Every header the gateway cares to send, credentials included: the signers choose.
        evidence = evidence_message(
            described, snapshot.digest, credentials=frozenset({"cookie", "authorization"})
        )
        return Forgery(claims, evidence, dict(header_for(self.attacker.group_key)))


@pytest.fixture(scope="module")
def arena(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Arena]:
    directory = tmp_path_factory.mktemp("adversary-rego")
    rego = directory / "payments.rego"
    rego.write_text(PAYMENTS)
    overrides = {"REGO_FILE": str(rego), "KEYMINT_REGO_QUERY": "envoy/authz/allow"}
    with asyncio.Runner() as runner:
        context = running_stack(directory, **overrides)
        stack = runner.run(context.__aenter__())
        session = aiohttp.ClientSession(loop=runner.get_loop())
        attacker = Attacker(stack, session)
        try:
            runner.run(attacker.coordinator.start())
            yield Arena(runner, stack, attacker)
        finally:
            runner.run(attacker.coordinator.close())
            runner.run(session.close())
            runner.run(context.__aexit__(None, None, None))


def test_control_the_honest_payment_is_signed(arena: Arena) -> None:
    forgery = arena.forge(JSON, SMALL)

    assert len(arena.run(arena.attacker.sign(forgery))) == 64


def test_a_body_the_policy_refuses_is_refused_by_the_signers_too(arena: Arena) -> None:
    forgery = arena.forge(JSON, RequestAttributes(body='{"amount": 5000}'))

    assert arena.run(arena.attacker.refused(forgery)) == {"policy_denied"}


def test_leaving_the_body_out_of_the_evidence_is_refused(arena: Arena) -> None:
    # The signers decide on what the evidence carries; they never assume what is missing.
    forgery = arena.forge(JSON, RequestAttributes())

    assert arena.run(arena.attacker.refused(forgery)) == {"policy_denied"}


def test_attributes_the_signers_cannot_read_exactly_are_refused(arena: Arena) -> None:
    forgery = arena.forge(JSON, SMALL)
    assert forgery.evidence is not None
    document = json.loads(forgery.evidence.request_attributes)
    forgery.evidence.request_attributes = json.dumps({**document, "trusted": True}).encode()

    assert arena.run(arena.attacker.refused(forgery)) == {"evidence_invalid"}


def test_a_credential_header_the_operator_keeps_from_policy_never_reaches_the_signers_policy(
    arena: Arena,
) -> None:
    # The policy would deny on seeing a cookie; the signers' settings drop it before it runs.
    forgery = arena.forge({**JSON, "cookie": "session=1"}, SMALL)
    assert forgery.evidence is not None
    assert forgery.evidence.headers["cookie"] == "session=1"

    assert len(arena.run(arena.attacker.sign(forgery))) == 64


def test_a_per_request_value_the_operator_keeps_from_policy_never_reaches_it(
    arena: Arena,
) -> None:
    with_id = RequestAttributes(body='{"amount": 5}', source_address="10.0.0.1", request_id="r-1")
    forgery = arena.forge(JSON, with_id)

    assert len(arena.run(arena.attacker.sign(forgery))) == 64


def test_a_cached_payment_needs_the_same_body(arena: Arena) -> None:
    """Through the gateway itself: a small payment is signed, a large one from the same caller
    on the same route is a fresh decision (the body is in the hot cache's key) and refused."""

    async def pay(amount: int, token: str) -> int:
        request = check_request(bearer=token, method="POST", path="/v1/payments", headers=JSON)
        request.attributes.request.http.body = json.dumps({"amount": amount})
        response = await arena.stack.check(request)
        return 200 if response.status.code == 0 else response.denied_response.status.code

    token = arena.stack.issuer.mint({"jti": str(uuid.uuid4())})
    assert [arena.run(pay(n, token)) for n in (5, 5, 5000)] == [200, 200, 403]
