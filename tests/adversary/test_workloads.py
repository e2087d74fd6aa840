"""The gateway as the attacker, with the new kinds of evidence: service-account tokens, JWT-SVIDs
and engineers' ID tokens. Unlike a certificate's PEM (a public document), each of these is
proof-bearing: signed by its issuer, for keymint's audience, short-lived. The attacker holds the
gateway's keys, configuration and code, and every token it has seen; the signers verify each
token themselves and refuse what it does not prove."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from extauthz.dev.idp import User
from extauthz.dev.inprocess import Stack, running_stack
from extauthz.dev.issuers import JwtKey, kubernetes_claims, sign_token, svid_claims
from extauthz.dev.settings import DEPLOY, TRUST_DOMAIN
from extauthz.dev.workloads import WORKLOAD_AUDIENCE, Workloads
from extauthz.model import Route
from tests.adversary.test_guard import Attacker, Forgery

ORDERS_ROUTE = Route("api.internal", "/v1/orders", "GET", {"route": "orders"})
DEPLOY_ROUTE = Route("api.internal", "/v1/things", "GET", {"route": "deploy"})


@dataclass
class Arena:
    runner: asyncio.Runner
    stack: Stack
    workloads: Workloads
    attacker: Attacker

    def run(self, coroutine: Any) -> Any:
        return self.runner.run(coroutine)

    def forgery(self, token: str, route: Route) -> Forgery:
        """What an honest gateway sends for this token on this route."""
        verifier = self.attacker.identifier.oidc
        assert verifier is not None
        return self.attacker.for_identity(self.run(verifier.verify(token)), route)

    def refused(self, forgery: Forgery) -> set[str]:
        rules: set[str] = self.run(self.attacker.refused(forgery))
        return rules


@pytest.fixture(scope="module")
def arena(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Arena]:
    directory = tmp_path_factory.mktemp("adversary-workloads")
    with asyncio.Runner() as runner:
        workloads = runner.run(Workloads.start(directory))
        context = running_stack(directory, oidc_issuer=workloads.github, **workloads.env())
        stack = runner.run(context.__aenter__())
        session = aiohttp.ClientSession(loop=runner.get_loop())
        attacker = Attacker(stack, session)
        try:
            runner.run(attacker.coordinator.start())
            yield Arena(runner, stack, workloads, attacker)
        finally:
            runner.run(attacker.coordinator.close())
            runner.run(session.close())
            runner.run(context.__aexit__(None, None, None))
            runner.run(workloads.stop())


def service_account(arena: Arena, **overrides: Any) -> str:
    return arena.workloads.service_account_token(jti=str(uuid.uuid4()), **overrides)


def test_control_each_kind_of_evidence_is_signed(arena: Arena) -> None:
    w = arena.workloads
    for token, route in (
        (service_account(arena), ORDERS_ROUTE),
        (w.jwt_svid(), ORDERS_ROUTE),
        (w.engineer_token("ada"), DEPLOY_ROUTE),
        (w.gitlab_token(jti=str(uuid.uuid4())), DEPLOY_ROUTE),
    ):
        assert len(arena.run(arena.attacker.sign(arena.forgery(token, route)))) == 64


def test_a_service_account_token_the_gateway_signs_itself_is_refused(arena: Arena) -> None:
    """The gateway has no cluster key: a token it makes under the cluster's kid proves nothing."""
    w = arena.workloads
    honest = arena.forgery(service_account(arena), ORDERS_ROUTE)
    own_key = JwtKey.generate(w.cluster.key.kid, "RS256")
    claims = kubernetes_claims(w.cluster.issuer, WORKLOAD_AUDIENCE, 0, overrides={})
    claims.update({"iat": honest.claims["iat"], "nbf": honest.claims["iat"]})
    claims["exp"] = honest.claims["iat"] + 3600
    forged = sign_token(own_key, claims, typ=None)
    assert honest.evidence is not None
    honest.evidence.value = forged.encode()

    assert arena.refused(honest) == {"evidence_invalid"}


def test_one_pods_token_mints_nothing_for_another_service_account(arena: Arena) -> None:
    forgery = arena.forgery(service_account(arena), ORDERS_ROUTE)
    forgery.claims["sub"] = (
        f"{arena.workloads.cluster.issuer}#sub=system:serviceaccount:shop:batch-1"
    )

    assert arena.refused(forgery) == {"subject_mismatch"}


def test_provenance_must_be_what_the_token_says(arena: Arena) -> None:
    forgery = arena.forgery(service_account(arena), ORDERS_ROUTE)
    forgery.claims["namespace"] = "kube-system"

    assert arena.refused(forgery) == {"provenance_mismatch"}


def test_a_jwt_svid_for_another_audience_is_refused(arena: Arena) -> None:
    """A JWT-SVID the attacker captured at another service (audience-bound) is no evidence."""
    w = arena.workloads
    forgery = arena.forgery(w.jwt_svid(), ORDERS_ROUTE)
    spiffe_id = f"spiffe://{TRUST_DOMAIN}/ns/shop/sa/web"
    elsewhere = svid_claims(spiffe_id, "https://billing.internal", forgery.claims["iat"])
    assert forgery.evidence is not None
    forgery.evidence.value = sign_token(w.spire, elsewhere).encode()

    assert arena.refused(forgery) == {"evidence_invalid"}


def test_a_jwt_svid_mints_no_certificate_bound_token(arena: Arena) -> None:
    """A JWT-SVID names no certificate: a `cnf` claim claiming one is refused."""
    forgery = arena.forgery(arena.workloads.jwt_svid(), ORDERS_ROUTE)
    forgery.claims["cnf"] = {"x5t#S256": "A" * 43}

    assert arena.refused(forgery) == {"cnf_mismatch"}


def test_an_unverified_email_buys_no_grant(arena: Arena) -> None:
    """Eve's IdP account claims Ada's address, unverified, and the platform group. The binding
    asks for a verified example.com address: the signers refuse what the policy would not."""
    w = arena.workloads
    forgery = arena.forgery(w.engineer_token("ada"), DEPLOY_ROUTE)
    eve = User("00u-eve", "ada@example.com", email_verified=False, groups=("platform",))
    assert forgery.evidence is not None
    forgery.evidence.value = w.idp.id_token(eve).encode()
    forgery.claims["sub"] = f"{w.idp.issuer}#sub=00u-eve"

    assert arena.refused(forgery) == {"policy_denied"}


def test_an_idp_key_does_not_sign_for_the_cluster(arena: Arena) -> None:
    """A token naming the cluster as issuer, signed by another configured issuer's key."""
    w = arena.workloads
    forgery = arena.forgery(service_account(arena), ORDERS_ROUTE)
    claims = kubernetes_claims(w.cluster.issuer, WORKLOAD_AUDIENCE, forgery.claims["iat"])
    assert forgery.evidence is not None
    forgery.evidence.value = sign_token(w.idp.key, claims, typ=None).encode()

    assert arena.refused(forgery) == {"evidence_invalid"}


def test_an_engineer_token_is_bounded_by_the_role_lifetime(arena: Arena) -> None:
    forgery = arena.forgery(arena.workloads.engineer_token("ada"), DEPLOY_ROUTE)
    assert forgery.claims["aud"] == DEPLOY
    forgery.claims["exp"] = forgery.claims["iat"] + 3600

    assert arena.refused(forgery) == {"ttl_not_granted"}
