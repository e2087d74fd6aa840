"""Every preset against tokens in its issuer's real shape: Kubernetes service accounts, GitLab CI,
SPIFFE JWT-SVIDs, Google, Okta and Entra ID. Each one is accepted as issued, and refused for each
algorithm it must not take, a wrong audience, a lifetime too long and a missing claim, with the
reason that says so. Kubernetes and JWT-SVIDs run twice, once per way their keys come: a file
(the cluster's JWKS, a SPIFFE trust bundle) and discovery (the cluster's own, a SPIRE OIDC
discovery provider), each served for real over loopback."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization

from extauthz.dev.github import REMOVE, compact_jws, hs256_signer
from extauthz.dev.issuers import (
    JwtKey,
    LocalIssuer,
    entra_claims,
    entra_header,
    gitlab_claims,
    google_claims,
    kubernetes_claims,
    okta_claims,
    sign_token,
    svid_claims,
    trust_bundle,
)
from extauthz.identity import (
    IdentityError,
    IssuerConfig,
    JwtVerifier,
    Reason,
)
from extauthz.identity.issuers import JwksPath, JwksUri
from extauthz.model import IdentityKind
from tests.extauthz.identity.conftest import TEST_JWKS_SETTINGS, SpireDiscoveryProvider
from tests.helpers import ManualClock, Run

KEYMINT = "https://keymint.test"
CLIENT_ID = "0oa-keymint-cli"
TRUST_DOMAIN = "prod.test"
WORKLOAD = f"spiffe://{TRUST_DOMAIN}/ns/shop/sa/web"


@pytest.fixture(scope="session")
def keys() -> dict[str, JwtKey]:
    """Key generation is slow; one key per algorithm (and a spare RSA one) for the session."""
    algorithms = ("RS256", "PS256", "ES256", "ES384", "EdDSA")
    made = {alg: JwtKey.generate(f"{alg.lower()}-1", alg) for alg in algorithms}
    made["RS256-2"] = JwtKey.generate("rs256-2", "RS256")
    made["ES256-2"] = JwtKey.generate("es256-2", "ES256")
    return made


@dataclass
class Case:
    """One preset, wired to a live issuer: what it verifies and what tokens it gets."""

    name: str
    verifier: JwtVerifier
    issuer: LocalIssuer
    config: IssuerConfig
    claims: Callable[..., dict[str, Any]]  # (overrides) -> claims issued now
    header: dict[str, Any]
    key: JwtKey

    def mint(
        self,
        overrides: dict[str, Any] | None = None,
        header: dict[str, Any] | None = None,
        key: JwtKey | None = None,
    ) -> str:
        key = key or self.key
        base = {**self.header, "kid": key.kid, "alg": key.alg, **(header or {})}
        return sign_token(key, self.claims(overrides), base, typ=None)


def _case(
    name: str,
    run: Run,
    clock: ManualClock,
    session: aiohttp.ClientSession,
    keys: dict[str, JwtKey],
    tmp_path: Path,
) -> tuple[Case, LocalIssuer]:
    rs = keys["RS256"]
    if name == "kubernetes":
        issuer = run(LocalIssuer(keys=[rs]).start())
        config = IssuerConfig.for_preset(
            "kubernetes",
            issuer=issuer.issuer,
            audiences=[KEYMINT],
            keys=JwksPath(issuer.write_jwks(tmp_path / "cluster-jwks.json")),
        )
        claims = lambda o=None: kubernetes_claims(issuer.issuer, KEYMINT, clock(), overrides=o)  # noqa: E731
        return Case(name, _verifier(config, session, clock), issuer, config, claims, {}, rs), issuer
    if name == "kubernetes_discovery":
        issuer = run(LocalIssuer(keys=[rs]).start())
        # The preset's default: keys from the cluster's /.well-known/openid-configuration.
        config = IssuerConfig.for_preset("kubernetes", issuer=issuer.issuer, audiences=[KEYMINT])
        claims = lambda o=None: kubernetes_claims(issuer.issuer, KEYMINT, clock(), overrides=o)  # noqa: E731
        return Case(name, _verifier(config, session, clock), issuer, config, claims, {}, rs), issuer
    if name == "gitlab_ci":
        issuer = run(LocalIssuer(keys=[rs]).start())
        config = IssuerConfig.for_preset("gitlab_ci", issuer=issuer.issuer, audiences=[KEYMINT])
        claims = lambda o=None: gitlab_claims(issuer.issuer, KEYMINT, clock(), overrides=o)  # noqa: E731
        header = {"typ": "JWT"}
        return Case(
            name, _verifier(config, session, clock), issuer, config, claims, header, rs
        ), issuer
    if name == "spiffe_jwt":
        es = keys["ES256"]
        issuer = run(LocalIssuer(keys=[es]).start())  # serves nothing used: keys are a bundle
        bundle = tmp_path / "bundle.json"
        bundle.write_text(_json(trust_bundle([es], x509_key=keys["RS256-2"])))
        config = IssuerConfig.for_preset(
            "spiffe_jwt",
            issuer=None,
            audiences=[KEYMINT],
            trust_domain=TRUST_DOMAIN,
            keys=JwksPath(bundle),
        )
        claims = lambda o=None: svid_claims(WORKLOAD, KEYMINT, clock(), overrides=o)  # noqa: E731
        header = {"typ": "JWT"}
        return Case(
            name, _verifier(config, session, clock), issuer, config, claims, header, es
        ), issuer
    if name == "spiffe_jwt_discovery":
        es = keys["ES256"]
        issuer = run(SpireDiscoveryProvider(keys=[es]).start())
        config = IssuerConfig.for_preset(
            "spiffe_jwt", issuer=issuer.issuer, audiences=[KEYMINT], trust_domain=TRUST_DOMAIN
        )
        # SPIRE sets `iss` (its `jwt_issuer`) when it is configured with one, as here.
        claims = lambda o=None: svid_claims(  # noqa: E731
            WORKLOAD, KEYMINT, clock(), overrides={"iss": issuer.issuer, **(o or {})}
        )
        header = {"typ": "JWT"}
        return Case(
            name, _verifier(config, session, clock), issuer, config, claims, header, es
        ), issuer
    if name == "google":
        issuer = run(LocalIssuer(keys=[rs]).start())
        # Google serves its keys from www.googleapis.com: the operator configures that URL.
        config = IssuerConfig.for_preset(
            "oidc",
            issuer=issuer.issuer,
            audiences=[CLIENT_ID],
            keys=JwksUri(f"{issuer.issuer}/keys"),
        )
        claims = lambda o=None: google_claims(issuer.issuer, CLIENT_ID, clock(), overrides=o)  # noqa: E731
        header = {"typ": "JWT"}
        return Case(
            name, _verifier(config, session, clock), issuer, config, claims, header, rs
        ), issuer
    if name == "okta":
        issuer = run(LocalIssuer(keys=[rs]).start())
        config = IssuerConfig.for_preset("oidc", issuer=issuer.issuer, audiences=[CLIENT_ID])
        claims = lambda o=None: okta_claims(issuer.issuer, CLIENT_ID, clock(), overrides=o)  # noqa: E731
        return Case(name, _verifier(config, session, clock), issuer, config, claims, {}, rs), issuer
    assert name == "entra"
    issuer = run(LocalIssuer(keys=[rs], path="/9188040d-6c67-4c5b-b112-36a304b66dad/v2.0").start())
    config = IssuerConfig.for_preset(
        "oidc",
        issuer=issuer.issuer,
        audiences=[CLIENT_ID],
        subject_claims=("tid", "oid"),  # `sub` is pairwise per application in Entra ID
        max_lifetime_seconds=3900,
    )
    claims = lambda o=None: entra_claims(issuer.issuer, CLIENT_ID, clock(), overrides=o)  # noqa: E731
    header = entra_header(rs)
    return Case(name, _verifier(config, session, clock), issuer, config, claims, header, rs), issuer


def _json(document: object) -> str:
    return json.dumps(document)


def _verifier(
    config: IssuerConfig, session: aiohttp.ClientSession, clock: ManualClock
) -> JwtVerifier:
    return JwtVerifier.from_configs(
        [config], session=session, jwks_settings=TEST_JWKS_SETTINGS, clock=clock
    )


PRESET_CASES = [
    "kubernetes",
    "kubernetes_discovery",
    "gitlab_ci",
    "spiffe_jwt",
    "spiffe_jwt_discovery",
    "google",
    "okta",
    "entra",
]


@pytest.fixture(params=PRESET_CASES)
def case(
    request: pytest.FixtureRequest,
    run: Run,
    clock: ManualClock,
    session: aiohttp.ClientSession,
    keys: dict[str, JwtKey],
    tmp_path: Path,
) -> Iterator[Case]:
    made, issuer = _case(request.param, run, clock, session, keys, tmp_path)
    yield made
    run(issuer.stop())


def reason_of(run: Run, verifier: JwtVerifier, token: str) -> Reason:
    with pytest.raises(IdentityError) as caught:
        run(verifier.verify(token))
    assert token not in str(caught.value)
    return caught.value.reason


# --- accepted as issued -------------------------------------------------------------------


EXPECTED: dict[str, Callable[[Case], dict[str, Any]]] = {
    "kubernetes": lambda c: {
        "kind": IdentityKind.KUBERNETES,
        "subject": f"{c.config.issuer}#sub=system:serviceaccount:shop:web",
        "claims": {"namespace": "shop", "service_account": "web", "pod": "web-7d4b9c6f5-x2x9q"},
        "provenance": {"namespace": "shop", "service_account": "web", "pod": "web-7d4b9c6f5-x2x9q"},
    },
    "kubernetes_discovery": lambda c: EXPECTED["kubernetes"](c),
    "gitlab_ci": lambda c: {
        "kind": IdentityKind.GITLAB_CI,
        "subject": f"{c.config.issuer}#namespace_id=72&project_id=20",
        "claims": {"project_path": "my-group/my-project", "ref_protected": "true"},
        "provenance": {"project_id": "20", "namespace_id": "72", "ref": "main"},
    },
    "spiffe_jwt": lambda c: {
        "kind": IdentityKind.SPIFFE_JWT,
        "subject": WORKLOAD,
        "claims": {"sub": WORKLOAD},
        "provenance": {"spiffe_id": WORKLOAD},
    },
    "spiffe_jwt_discovery": lambda c: {
        **EXPECTED["spiffe_jwt"](c),
        "claims": {"sub": WORKLOAD, "iss": c.config.issuer},
    },
    "google": lambda c: {
        "kind": IdentityKind.OIDC,
        "subject": f"{c.config.issuer}#sub=10769150350006150715113082367",
        "claims": {"email": "jsmith@example.com", "hd": "example.com"},
        "provenance": {"email": "jsmith@example.com"},
    },
    "okta": lambda c: {
        "kind": IdentityKind.OIDC,
        "subject": f"{c.config.issuer}#sub=00uid4BxXw6I6TV4m0g3",
        "claims": {"email": "john.doe@example.com"},
        "provenance": {"email": "john.doe@example.com"},
        "lists": {"groups": ("Everyone", "platform"), "amr": ("pwd",)},
    },
    "entra": lambda c: {
        "kind": IdentityKind.OIDC,
        "subject": (
            f"{c.config.issuer}#tid=9188040d-6c67-4c5b-b112-36a304b66dad"
            "&oid=00000000-0000-0000-66f3-3332eca7ea81"
        ),
        "claims": {"oid": "00000000-0000-0000-66f3-3332eca7ea81"},
        "provenance": {},  # Entra ID sends no email_verified: its `email` is not believed
        "lists": {"groups": ("62e90394-69f5-4237-9190-012177145e10",)},
    },
}


def test_accepted_in_its_real_shape(run: Run, case: Case, clock: ManualClock) -> None:
    token = case.mint()
    identity = run(case.verifier.verify(token))
    expected = EXPECTED[case.name](case)
    assert identity.kind is expected["kind"]
    assert identity.subject == expected["subject"]
    assert identity.issuer == case.config.label
    assert identity.evidence.kind == "oidc_token"
    assert identity.evidence.value == token.encode()
    for name, value in expected["claims"].items():
        assert identity.claims[name] == value
    for name, value in expected["provenance"].items():
        assert identity.provenance[name] == value
    if not expected["provenance"]:
        assert identity.provenance == {}
    assert all(isinstance(v, str) for v in identity.claims.values())
    for name, values in expected.get("lists", {}).items():
        assert identity.claim_lists[name] == values
    assert "aud" not in identity.claim_lists
    iat = int(clock())
    assert identity.expires_at <= iat + case.config.max_token_age_seconds
    if case.name == "entra":
        assert "email" not in identity.claims


# What each case's issuer served for its first token: keys from a file cost no fetch, from a
# configured jwks_uri no discovery, from discovery both.
FETCHED: dict[str, dict[str, int]] = {
    "kubernetes": {},
    "kubernetes_discovery": {"discovery": 1, "jwks": 1},
    "gitlab_ci": {"discovery": 1, "jwks": 1},
    "spiffe_jwt": {},
    "spiffe_jwt_discovery": {"discovery": 1, "jwks": 1},
    "google": {"jwks": 1},
    "okta": {"discovery": 1, "jwks": 1},
    "entra": {"discovery": 1, "jwks": 1},
}


def test_keys_come_from_where_configured(run: Run, case: Case) -> None:
    assert run(case.verifier.verify(case.mint()))
    assert dict(case.issuer.served) == FETCHED[case.name]


# --- refused: algorithms ------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "HS256", "HS512", "RS512", "ES512", "", None])
def test_algorithms_never_accepted(run: Run, case: Case, alg: object) -> None:
    token = compact_jws({**case.header, "alg": alg, "kid": case.key.kid}, case.claims(), None)
    assert reason_of(run, case.verifier, token) is Reason.ALG_NOT_ALLOWED


def test_hmac_keyed_with_the_public_key(run: Run, case: Case) -> None:
    public = case.key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {**case.header, "alg": "HS256", "kid": case.key.kid}
    token = compact_jws(header, case.claims(), hs256_signer(public))
    assert reason_of(run, case.verifier, token) is Reason.ALG_NOT_ALLOWED


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256", "ES384", "EdDSA"])
def test_allowed_algorithms_only_as_configured(
    run: Run, case: Case, keys: dict[str, JwtKey], alg: str
) -> None:
    """An algorithm keymint knows but this issuer is not configured for is refused; one it is
    configured for verifies only with a key published under the token's kid."""
    other = {"RS256": "RS256-2", "ES256": "ES256-2"}.get(alg, alg)
    key = keys[other].with_kid(case.key.kid)  # the issuer's kid, someone else's key
    token = case.mint(key=key)
    if alg not in case.config.algorithms:
        assert reason_of(run, case.verifier, token) is Reason.ALG_NOT_ALLOWED
    elif key.alg == case.key.alg:
        assert reason_of(run, case.verifier, token) is Reason.BAD_SIGNATURE
    else:
        # Configured, but the kid names a key of another type: RSA never checks ES256.
        assert reason_of(run, case.verifier, token) is Reason.ALG_NOT_ALLOWED


# --- refused: audience, lifetime, claims ---------------------------------------------------


@pytest.mark.parametrize(
    "aud",
    [
        "https://other-service.example",
        [KEYMINT, "https://other-service.example"],
        [],
        None,
        REMOVE,
    ],
)
def test_wrong_audience(run: Run, case: Case, aud: object) -> None:
    ours = next(iter(case.config.audiences))
    audience = [ours if a == KEYMINT else a for a in aud] if isinstance(aud, list) else aud
    assert reason_of(run, case.verifier, case.mint({"aud": audience})) is Reason.BAD_AUDIENCE


def test_lifetime_too_long(run: Run, case: Case, clock: ManualClock) -> None:
    now = int(clock())
    too_long = case.config.max_lifetime_seconds + 1
    token = case.mint({"iat": now, "exp": now + too_long})
    assert reason_of(run, case.verifier, token) is Reason.TOKEN_LIFETIME_TOO_LONG


def test_too_old_and_expired(run: Run, case: Case, clock: ManualClock) -> None:
    token = case.mint()
    clock.advance(case.config.max_token_age_seconds + 31)
    assert reason_of(run, case.verifier, token) in (Reason.TOKEN_TOO_OLD, Reason.TOKEN_EXPIRED)


KUBERNETES_MISSING = [
    ("sub", Reason.MISSING_CLAIM),
    ("kubernetes.io", Reason.MISSING_CLAIM),
    ("nbf", Reason.MISSING_CLAIM),
    ("iss", Reason.UNKNOWN_ISSUER),
]
MISSING: dict[str, list[tuple[str, Reason]]] = {
    "kubernetes": KUBERNETES_MISSING,
    "kubernetes_discovery": KUBERNETES_MISSING,
    "gitlab_ci": [
        ("sub", Reason.MISSING_CLAIM),
        ("project_id", Reason.MISSING_CLAIM),
        ("namespace_id", Reason.MISSING_CLAIM),
    ],
    "spiffe_jwt": [("sub", Reason.UNKNOWN_ISSUER), ("exp", Reason.MISSING_CLAIM)],
    # Found by its `iss`, not by the trust domain of `sub`: without `iss` it is no one's.
    "spiffe_jwt_discovery": [
        ("iss", Reason.UNKNOWN_ISSUER),
        ("sub", Reason.MISSING_CLAIM),
        ("exp", Reason.MISSING_CLAIM),
    ],
    "google": [("sub", Reason.MISSING_CLAIM), ("iat", Reason.MISSING_CLAIM)],
    "okta": [("sub", Reason.MISSING_CLAIM), ("exp", Reason.MISSING_CLAIM)],
    "entra": [("oid", Reason.MISSING_CLAIM), ("tid", Reason.MISSING_CLAIM)],
}


def test_missing_claims(run: Run, case: Case) -> None:
    for claim, reason in MISSING[case.name]:
        assert reason_of(run, case.verifier, case.mint({claim: REMOVE})) is reason, claim


def test_configured_required_claims(
    run: Run, case: Case, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    config = IssuerConfig.for_preset(
        case.config.preset.name,
        name=case.config.name,
        issuer=case.config.issuer,
        audiences=case.config.audiences,
        keys=case.config.keys,
        trust_domain=case.config.trust_domain,
        subject_claims=case.config.subject_claims,
        max_lifetime_seconds=case.config.max_lifetime_seconds,
        required_claims=("department",),
    )
    verifier = _verifier(config, session, clock)
    assert reason_of(run, verifier, case.mint()) is Reason.MISSING_CLAIM
    assert run(verifier.verify(case.mint({"department": "payments"})))


@pytest.mark.parametrize("typ", ["at+jwt", "jwt", "", 1])
def test_token_type(run: Run, case: Case, typ: object) -> None:
    """An access token (`at+jwt`), or anything that is not a JWT, is not an identity token."""
    assert reason_of(run, case.verifier, case.mint(header={"typ": typ})) is Reason.BAD_TOKEN_TYPE


def test_unknown_issuer_costs_no_key_fetch(run: Run, case: Case) -> None:
    token = case.mint({"iss": "https://evil.example", "sub": "system:serviceaccount:a:b"})
    assert reason_of(run, case.verifier, token) is Reason.UNKNOWN_ISSUER
    assert case.issuer.served == {}
