"""Every preset through Check and through POST /token, against the real stack: signer processes
whose guards verify the same tokens with the same code, and live issuers of each kind.

A mint needs t signers whose guards verified the caller's token themselves (same issuers file,
same code), so every 200 here is also the signers' verdict.

Per preset (GitHub Actions, Kubernetes, GitLab CI, JWT-SVIDs, an engineer's ID token): a token
its binding allows is exchanged (Check 200, /token 200) for a token naming the same subject and
provenance; one no binding allows is denied (403, invalid_request no_matching_binding); and one
refused for each algorithm, audience, lifetime and missing-claim fault gets that reason (401,
invalid_request).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from extauthz.dev.calls import check_request
from extauthz.dev.github import REMOVE, compact_jws, hs256_signer
from extauthz.dev.inprocess import Stack, running_stack
from extauthz.dev.issuers import JwtKey, gitlab_claims, kubernetes_claims, sign_token, svid_claims
from extauthz.dev.servers import BackgroundLoop
from extauthz.dev.settings import DEPLOY, ISSUER, ORDERS, TRUST_DOMAIN
from extauthz.dev.workloads import ENGINEER_TTL, WORKLOAD_AUDIENCE, Workloads
from extauthz.identity import github_subject
from extauthz.server.http_edge import start_http
from extauthz.server.token_exchange import (
    GRANT_TYPE_TOKEN_EXCHANGE,
    TOKEN_TYPE_ID_TOKEN,
    TOKEN_TYPE_JWT,
)


@dataclass
class Live:
    loop: BackgroundLoop
    stack: Stack
    workloads: Workloads
    token_url: str

    def check(self, token: str, route_key: str) -> tuple[int, dict[str, Any]]:
        response = self.loop.run(self.stack.check(check_request(bearer=token, route_key=route_key)))
        if response.status.code == 0:
            bearer = response.ok_response.headers[0].header.value
            return 200, {"access_token": bearer.removeprefix("Bearer ")}
        return response.denied_response.status.code, json.loads(response.denied_response.body)

    def exchange(
        self, token: str, audience: str, token_type: str = TOKEN_TYPE_JWT
    ) -> tuple[int, dict[str, Any]]:
        form = {
            "grant_type": GRANT_TYPE_TOKEN_EXCHANGE,
            "subject_token": token,
            "subject_token_type": token_type,
            "audience": audience,
        }

        async def post() -> tuple[int, dict[str, Any]]:
            async with (
                aiohttp.ClientSession() as session,
                session.post(self.token_url, data=form) as reply,
            ):
                return reply.status, await reply.json()

        return self.loop.run(post())

    def minted_claims(self, token: str, audience: str) -> dict[str, Any]:
        key = Ed25519PublicKey.from_public_bytes(self.stack.gateway.group_public_key)
        claims: dict[str, Any] = jwt.decode(
            token, key, algorithms=["EdDSA"], audience=audience, issuer=ISSUER
        )
        return claims


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    directory = tmp_path_factory.mktemp("workloads")
    loop = BackgroundLoop()
    workloads = loop.run(Workloads.start(directory))
    context = running_stack(directory, oidc_issuer=workloads.github, **workloads.env())
    try:
        stack = loop.run(context.__aenter__(), timeout=120)
        runner, port = loop.run(start_http(stack.gateway, "127.0.0.1:0"))
        yield Live(loop, stack, workloads, f"http://127.0.0.1:{port}/token")
        loop.run(runner.cleanup())
        loop.run(context.__aexit__(None, None, None), timeout=60)
    finally:
        loop.run(workloads.stop())
        loop.close()


@dataclass(frozen=True)
class Kind:
    """One preset as the tests use it."""

    name: str
    route_key: str
    audience: str
    max_lifetime: int
    missing: str  # a claim whose absence is `missing_claim`
    key: Callable[[Workloads], JwtKey | None]  # None: the GitHub issuer signs
    claims: Callable[[Workloads, dict[str, Any]], dict[str, Any]]
    denied: dict[str, Any]  # overrides no binding allows
    subject: Callable[[Workloads], str]
    provenance: dict[str, str]

    def token(
        self,
        w: Workloads,
        overrides: dict[str, Any] | None = None,
        header: dict[str, Any] | None = None,
    ) -> str:
        key = self.key(w)
        if key is None:
            return w.github.mint(overrides, header)
        return sign_token(key, self.claims(w, overrides or {}), header)

    def signer_key(self, w: Workloads) -> JwtKey:
        key = self.key(w)
        if key is None:
            return JwtKey(w.github.signing_key.kid, "RS256", w.github.signing_key.private_key)
        return key


def _people(w: Workloads, overrides: dict[str, Any]) -> dict[str, Any]:
    claims = w.idp.claims_for("ada")
    for name, value in overrides.items():
        if value is REMOVE:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


KINDS = [
    Kind(
        "github_actions",
        "deploy",
        DEPLOY,
        3600,
        "repository_id",
        lambda w: None,
        lambda w, o: w.github.claims(o),
        {"repository_id": "75"},
        lambda w: github_subject(w.github.issuer, "65", "74"),
        {"repository_id": "74", "environment": "prod"},
    ),
    Kind(
        "kubernetes",
        "orders",
        ORDERS,
        7200,
        "kubernetes.io",
        lambda w: w.cluster.key,
        lambda w, o: kubernetes_claims(
            w.cluster.issuer, WORKLOAD_AUDIENCE, time.time(), overrides=o
        ),
        {
            "sub": "system:serviceaccount:billing:web",
            "kubernetes.io": {
                "namespace": "billing",
                "serviceaccount": {"name": "web", "uid": "u"},
            },
        },
        lambda w: f"{w.cluster.issuer}#sub=system:serviceaccount:shop:web",
        {"namespace": "shop", "service_account": "web", "pod": "web-7d4b9c6f5-x2x9q"},
    ),
    Kind(
        "gitlab_ci",
        "deploy",
        DEPLOY,
        3900,
        "project_id",
        lambda w: w.gitlab.key,
        lambda w, o: gitlab_claims(w.gitlab.issuer, WORKLOAD_AUDIENCE, time.time(), overrides=o),
        {"ref_protected": "false"},
        lambda w: f"{w.gitlab.issuer}#namespace_id=72&project_id=20",
        {"project_id": "20", "namespace_id": "72", "ref": "main", "pipeline_source": "push"},
    ),
    Kind(
        "spiffe_jwt",
        "orders",
        ORDERS,
        3600,
        "exp",
        lambda w: w.spire,
        lambda w, o: svid_claims(
            f"spiffe://{TRUST_DOMAIN}/ns/shop/sa/web", WORKLOAD_AUDIENCE, time.time(), overrides=o
        ),
        {"sub": f"spiffe://{TRUST_DOMAIN}/ns/billing/sa/web"},
        lambda w: f"spiffe://{TRUST_DOMAIN}/ns/shop/sa/web",
        {"spiffe_id": f"spiffe://{TRUST_DOMAIN}/ns/shop/sa/web"},
    ),
    Kind(
        "oidc",
        "deploy",
        DEPLOY,
        86400,
        "sub",
        lambda w: w.idp.key,
        _people,
        {"groups": ["eng"]},
        lambda w: f"{w.idp.issuer}#sub=00u-ada",
        {"email": "ada@example.com"},
    ),
]


@pytest.fixture(params=KINDS, ids=[k.name for k in KINDS])
def kind(request: pytest.FixtureRequest) -> Kind:
    kind: Kind = request.param
    return kind


def test_allowed_through_check_and_token(live: Live, kind: Kind) -> None:
    w = live.workloads
    status, answer = live.check(kind.token(w), kind.route_key)
    assert status == 200, answer
    via_check = live.minted_claims(answer["access_token"], kind.audience)
    status, answer = live.exchange(kind.token(w, {"jti": "via-token-endpoint"}), kind.audience)
    assert status == 200, answer
    via_token = live.minted_claims(answer["access_token"], kind.audience)
    for claims in (via_check, via_token):
        assert claims["sub"] == kind.subject(w)
        for name, value in kind.provenance.items():
            assert claims[name] == value, name
        assert "cnf" not in claims  # a bearer token's caller has no certificate to bind to
    if kind.name == "oidc":  # the engineer role caps the lifetime at 15 minutes
        assert via_token["exp"] - via_token["iat"] <= ENGINEER_TTL
        assert answer["expires_in"] <= ENGINEER_TTL
        assert answer["scope"] == "deploy:read"


def test_denied_by_a_rule(live: Live, kind: Kind) -> None:
    token = kind.token(live.workloads, kind.denied)
    status, answer = live.check(token, kind.route_key)
    assert (status, answer["error"]) == (403, "no_matching_binding")
    status, answer = live.exchange(token, kind.audience)
    assert (status, answer["error"]) == (400, "invalid_request")
    assert answer["error_description"].startswith("no_matching_binding")


def _refusals(kind: Kind, w: Workloads) -> dict[str, tuple[str, str]]:
    """name -> (token, the reason it must be refused with)."""
    claims = kind.claims(w, {})
    key = kind.signer_key(w)
    public = key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    now = int(time.time())
    other = "EdDSA" if kind.name != "oidc" else "ES256"
    return {
        "alg none": (compact_jws({"alg": "none", "kid": key.kid}, claims, None), "alg_not_allowed"),
        "HS256 with the public key": (
            compact_jws({"alg": "HS256", "kid": key.kid}, claims, hs256_signer(public)),
            "alg_not_allowed",
        ),
        f"{other}, not configured": (
            sign_token(JwtKey.generate(key.kid, other), claims),
            "alg_not_allowed",
        ),
        "another audience": (kind.token(w, {"aud": "https://other.example"}), "bad_audience"),
        "two audiences": (
            kind.token(w, {"aud": [WORKLOAD_AUDIENCE, "https://other.example"]}),
            "bad_audience",
        ),
        "lifetime too long": (
            kind.token(w, {"iat": now, "nbf": now, "exp": now + kind.max_lifetime + 60}),
            "token_lifetime_too_long",
        ),
        f"no {kind.missing}": (kind.token(w, {kind.missing: REMOVE}), "missing_claim"),
    }


def test_refused_for_each_fault_through_check_and_token(live: Live, kind: Kind) -> None:
    for name, (token, reason) in _refusals(kind, live.workloads).items():
        status, answer = live.check(token, kind.route_key)
        assert (status, answer["error"]) == (401, reason), (name, answer)
        status, answer = live.exchange(token, kind.audience, TOKEN_TYPE_ID_TOKEN)
        assert status == 400, (name, answer)
        assert answer["error"] == "invalid_request", (name, answer)
        assert answer["error_description"].startswith(reason), (name, answer)
