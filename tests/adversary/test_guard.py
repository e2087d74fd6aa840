"""The gateway as the attacker, against the signers' guards: real signer processes composed with the
gateway's evidence checker, a real OIDC issuer, real certificates.

The attacker holds everything the gateway holds: the coordinator's mTLS key and certificate (so it
can drive signers directly), the gateway's configuration (policy files, issuer settings) and code
(identity verification, policy, token building), and the credentials of every caller it has seen.
It builds the sign request an honest gateway would send, then changes one thing. Each change must
be refused by the signers with its named rule; the honest request (the control) must be signed.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from extauthz.dev.inprocess import Stack, running_stack
from extauthz.dev.settings import DEPLOY, ISSUER, ORDERS
from extauthz.identity.errors import token_reference
from extauthz.model import Identity, Route
from extauthz.policy import AuthzRequest, Denial, PolicyEngine
from extauthz.server.app import build_identifier, build_policy_engine
from extauthz.server.claims import confirmation_claim, provenance_claims
from extauthz.server.mint import evidence_message
from signer.coordinator import Coordinator, SigningRefused
from signer.proto import signer_pb2
from signer.token import header_for, signing_input

BUDGET = 4  # KEYMINT_EVIDENCE_BUDGET on every signer of this stack
T, N = 2, 3


@dataclass
class Forgery:
    """One sign request: the claims to sign and the evidence to carry, both editable."""

    claims: dict[str, Any]
    evidence: signer_pb2.Evidence | None
    header: dict[str, Any] = field(default_factory=dict)

    def message(self) -> bytes:
        return signing_input(self.header, self.claims)


class Attacker:
    """The gateway's keys, configuration and code, used against the signers."""

    def __init__(self, stack: Stack, session: aiohttp.ClientSession) -> None:
        settings = stack.gateway.settings
        self.stack = stack
        self.identifier = build_identifier(settings, session, time.time)
        self.engine: PolicyEngine = build_policy_engine(settings)[0]
        self.coordinator = Coordinator(
            endpoints=stack.cluster.endpoints(),
            tls=stack.cluster.coordinator_tls,
            threshold=stack.cluster.threshold,
        )
        self.group_key = stack.gateway.group_public_key  # the active key the gateway mints with

    async def honest(self, token: str, route_key: str = "deploy") -> Forgery:
        """Exactly what the gateway sends for this caller's token on this route."""
        assert self.identifier.oidc is not None
        identity = await self.identifier.oidc.verify(token)
        return self.for_identity(
            identity, Route("api.internal", "/v1/things", "GET", {"route": route_key})
        )

    def for_identity(self, identity: Identity, route: Route) -> Forgery:
        request = AuthzRequest(identity, route)
        snapshot = self.engine.snapshot()
        grant = self.engine.evaluate(request, snapshot)
        assert not isinstance(grant, Denial), grant
        now = int(time.time())
        ttl = min(grant.ttl_seconds, identity.expires_at - now)  # as the gateway clamps it
        claims: dict[str, Any] = {
            **provenance_claims(identity),
            "iss": ISSUER,
            "sub": identity.subject,
            "aud": grant.audience,
            "scope": " ".join(grant.scopes),
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "jti": str(uuid.uuid4()),
        }
        if (cnf := confirmation_claim(identity)) is not None:
            claims["cnf"] = cnf
        header = dict(header_for(self.group_key))
        return Forgery(claims, evidence_message(request, snapshot.digest), header)

    async def sign(self, forgery: Forgery) -> bytes:
        message = forgery.message()
        outcome = await self.coordinator.sign(message, evidence=forgery.evidence, timeout=5.0)
        public_key = Ed25519PublicKey.from_public_bytes(self.group_key)
        public_key.verify(outcome.signature, message)
        return outcome.signature

    async def refused(self, forgery: Forgery) -> set[str]:
        """The guard rules the signers cited; fails the test if the forgery was signed."""
        return {reason.split(":")[1] for reason in await self.refusals(forgery)}

    async def refusals(self, forgery: Forgery) -> set[str]:
        """What the signers answered, rule and detail; fails the test if the forgery was signed."""
        with pytest.raises(SigningRefused) as refusal:
            await self.sign(forgery)
        return set(refusal.value.refusals.values())


@dataclass
class Arena:
    runner: asyncio.Runner
    stack: Stack
    attacker: Attacker
    revocations: Path

    def run(self, coroutine: Any) -> Any:
        return self.runner.run(coroutine)


@pytest.fixture(scope="module")
def arena(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Arena]:
    directory = tmp_path_factory.mktemp("adversary-guard")
    revocations = directory / "signer-revocations.json"
    revocations.write_text(json.dumps({"subjects": {}, "jtis": {}}))
    overrides = {
        "KEYMINT_EVIDENCE_BUDGET": str(BUDGET),
        "KEYMINT_SIGNER_REVOCATIONS_FILE": str(revocations),
    }
    with asyncio.Runner() as runner:
        context = running_stack(directory, **overrides)
        stack = runner.run(context.__aenter__())
        session = aiohttp.ClientSession(loop=runner.get_loop())
        attacker = Attacker(stack, session)
        try:
            runner.run(attacker.coordinator.start())
            yield Arena(runner, stack, attacker, revocations)
        finally:
            runner.run(attacker.coordinator.close())
            runner.run(session.close())
            runner.run(context.__aexit__(None, None, None))


def fresh_token(arena: Arena, **claims: Any) -> str:
    """A CI job's OIDC token the gateway has just seen (every test gets its own)."""
    return arena.stack.issuer.mint({"jti": str(uuid.uuid4()), **claims})


def test_control_the_honest_request_is_signed(arena: Arena) -> None:
    forgery = arena.run(arena.attacker.honest(fresh_token(arena)))

    assert len(arena.run(arena.attacker.sign(forgery))) == 64


def test_signing_with_no_evidence_is_refused(arena: Arena) -> None:
    forgery = arena.run(arena.attacker.honest(fresh_token(arena)))
    forgery.evidence = None

    assert arena.run(arena.attacker.refused(forgery)) == {"evidence_missing"}


def test_signing_for_another_subject_with_a_callers_evidence_is_refused(arena: Arena) -> None:
    forgery = arena.run(arena.attacker.honest(fresh_token(arena)))
    forgery.claims["sub"] = "spiffe://prod.test/ns/shop/sa/web"

    assert arena.run(arena.attacker.refused(forgery)) == {"subject_mismatch"}


def test_signing_with_a_forged_route_the_policy_does_not_grant_is_refused(arena: Arena) -> None:
    # The caller may deploy; the attacker claims Envoy asked for the orders route, whose audience
    # the caller's binding does not allow. The route is the gateway's word; policy still bounds it.
    forgery = arena.run(arena.attacker.honest(fresh_token(arena)))
    assert forgery.evidence is not None
    forgery.evidence.context_extensions["route"] = "orders"

    assert arena.run(arena.attacker.refused(forgery)) == {"policy_denied"}


def test_signing_for_an_audience_policy_does_not_grant_is_refused(arena: Arena) -> None:
    forgery = arena.run(arena.attacker.honest(fresh_token(arena)))
    forgery.claims["aud"] = ORDERS

    assert arena.run(arena.attacker.refused(forgery)) == {"audience_not_granted"}


def test_signing_for_a_scope_policy_does_not_grant_is_refused(arena: Arena) -> None:
    forgery = arena.run(arena.attacker.honest(fresh_token(arena)))
    forgery.claims["scope"] += " orders:read"

    assert arena.run(arena.attacker.refused(forgery)) == {"scope_not_granted"}


def test_signing_for_a_lifetime_policy_does_not_grant_is_refused(arena: Arena) -> None:
    # A credential that lives long enough that only the role's 600 s limit is broken.
    token = fresh_token(arena, exp=int(time.time()) + 1800)
    forgery = arena.run(arena.attacker.honest(token))
    assert forgery.claims["exp"] - forgery.claims["iat"] == 600
    forgery.claims["exp"] = forgery.claims["iat"] + 900

    assert arena.run(arena.attacker.refused(forgery)) == {"ttl_not_granted"}


def test_signing_for_an_explicit_request_policy_would_refuse_is_refused(arena: Arena) -> None:
    # As if the caller had asked /token for the orders audience: policy refuses that request.
    forgery = arena.run(arena.attacker.honest(fresh_token(arena)))
    assert forgery.evidence is not None
    forgery.evidence.requested_audience = ORDERS
    forgery.claims["aud"] = ORDERS

    assert arena.run(arena.attacker.refused(forgery)) == {"policy_denied"}


def test_signing_under_a_policy_version_the_signers_do_not_hold_is_refused(arena: Arena) -> None:
    forgery = arena.run(arena.attacker.honest(fresh_token(arena)))
    assert forgery.evidence is not None
    forgery.evidence.policy_sha256 = "0" * 64

    assert arena.run(arena.attacker.refused(forgery)) == {"policy_version"}


def test_signing_under_no_policy_version_is_refused(arena: Arena) -> None:
    forgery = arena.run(arena.attacker.honest(fresh_token(arena)))
    assert forgery.evidence is not None
    forgery.evidence.policy_sha256 = ""

    assert arena.run(arena.attacker.refused(forgery)) == {"policy_version"}


def test_evidence_replayed_past_its_budget_is_refused(arena: Arena) -> None:
    token = fresh_token(arena)

    async def replay_until_refused() -> tuple[int, set[str]]:
        for signed in range(3 * BUDGET * N):
            forgery = await arena.attacker.honest(token)
            try:
                await arena.attacker.sign(forgery)
            except SigningRefused as refusal:
                return signed, {r.split(":")[1] for r in refusal.refusals.values()}
        return 3 * BUDGET * N, set()

    signed, rules = arena.run(replay_until_refused())

    # Each of the n signers gives one credential `BUDGET` shares; a token takes t of them.
    assert BUDGET <= signed <= N * BUDGET // T
    assert rules == {"evidence_budget"}
    # Another credential of the same caller is not affected: the budget is per credential.
    arena.run(arena.attacker.sign(arena.run(arena.attacker.honest(fresh_token(arena)))))


def test_signing_with_an_oidc_token_past_its_max_age_is_refused(arena: Arena) -> None:
    # A token of the same subject, signed by the same issuer key and not expired, but issued 15
    # minutes ago: past the 600 s a GitHub Actions token is accepted for (the signers' own
    # KEYMINT_OIDC_MAX_TOKEN_AGE_SECONDS), whatever the gateway says of it.
    forgery = arena.run(arena.attacker.honest(fresh_token(arena)))
    now = int(time.time())
    aged = fresh_token(arena, iat=now - 900, nbf=now - 900, exp=now + 600)
    assert forgery.evidence is not None
    forgery.evidence.value = aged.encode()

    assert arena.run(arena.attacker.refusals(forgery)) == {
        f"guard:evidence_invalid: token_too_old: token {token_reference(aged)}: token is older "
        "than 600 s"
    }


def test_signing_with_an_oidc_token_issued_for_a_year_is_refused(arena: Arena) -> None:
    # Issued just now, but to live a year: no GitHub Actions token does (the signers' own
    # KEYMINT_OIDC_MAX_LIFETIME_SECONDS, 3600 s), so it is a misissued or forged one.
    forgery = arena.run(arena.attacker.honest(fresh_token(arena)))
    now = int(time.time())
    year = fresh_token(arena, iat=now, nbf=now, exp=now + 365 * 24 * 3600)
    assert forgery.evidence is not None
    forgery.evidence.value = year.encode()

    assert arena.run(arena.attacker.refusals(forgery)) == {
        f"guard:evidence_invalid: token_lifetime_too_long: token {token_reference(year)}: token "
        f"lives {365 * 24 * 3600} s (exp - iat), over the 3600 s this issuer's tokens may live"
    }


def test_signing_for_a_subject_revoked_on_the_signers_is_refused(arena: Arena) -> None:
    token = fresh_token(arena)
    forgery = arena.run(arena.attacker.honest(token))
    subject = forgery.claims["sub"]
    revocations = {"subjects": {subject: time.time() + 3600}, "jtis": {}}
    arena.revocations.write_text(json.dumps(revocations))
    try:
        time.sleep(1.1)  # the signers look at their file at most once a second
        # The gateway's own list knows nothing of it: only the signers refuse.
        assert not arena.stack.gateway.pipeline.revocations.subject_revoked(subject)
        assert arena.run(arena.attacker.refused(replace(forgery))) == {"subject_revoked"}
    finally:
        arena.revocations.write_text(json.dumps({"subjects": {}, "jtis": {}}))
    time.sleep(1.1)
    arena.run(arena.attacker.sign(arena.run(arena.attacker.honest(fresh_token(arena)))))


def test_signing_for_a_certificate_holder_seen_on_another_route_is_bounded_by_policy(
    arena: Arena,
) -> None:
    # Certificate evidence is a public document: the attacker needs no key to present one. The
    # guard still holds it to what policy grants that SPIFFE ID: orders, never deploy.
    svid = arena.stack.svid("/ns/shop/sa/web")
    assert arena.attacker.identifier.certificates is not None
    identity = arena.attacker.identifier.certificates.verify_pem(svid.pem)
    forgery = arena.attacker.for_identity(
        identity, Route("api.internal", "/v1/orders", "GET", {"route": "orders"})
    )
    arena.run(arena.attacker.sign(replace(forgery, claims=dict(forgery.claims))))

    assert forgery.evidence is not None
    forgery.claims["aud"] = DEPLOY
    forgery.evidence.context_extensions["route"] = "deploy"
    assert arena.run(arena.attacker.refused(forgery)) == {"policy_denied"}
