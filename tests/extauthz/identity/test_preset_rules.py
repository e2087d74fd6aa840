"""The rules each preset adds beyond the common ones, the algorithms beyond RS256, keys from a
JWKS file, and JWT-SVIDs whose keys come from a SPIRE OIDC discovery provider: what a token of the
right shape but the wrong content gets."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from extauthz.dev.github import REMOVE
from extauthz.dev.issuers import (
    JwtKey,
    LocalIssuer,
    kubernetes_claims,
    okta_claims,
    sign_token,
    svid_claims,
    trust_bundle,
)
from extauthz.identity import (
    IdentityConfigError,
    IdentityError,
    IssuerConfig,
    JwksFile,
    JwtVerifier,
    Reason,
)
from extauthz.identity.issuers import JwksPath
from extauthz.model import IdentityKind
from tests.extauthz.identity.conftest import TEST_JWKS_SETTINGS, SpireDiscoveryProvider
from tests.helpers import ManualClock, Run

KEYMINT = "https://keymint.test"
CLUSTER = "https://oidc.prod-cluster.example"
IDP = "https://login.example.com"


@pytest.fixture(scope="module")
def rsa() -> JwtKey:
    return JwtKey.generate("rsa-1", "RS256")


@pytest.fixture(scope="module")
def ec() -> JwtKey:
    return JwtKey.generate("ec-1", "ES256")


def verifier_of(
    config: IssuerConfig, session: aiohttp.ClientSession, clock: ManualClock
) -> JwtVerifier:
    return JwtVerifier.from_configs(
        [config], session=session, jwks_settings=TEST_JWKS_SETTINGS, clock=clock
    )


def jwks_file(path: Path, *keys: JwtKey, use: str | None = "sig", alg: bool = True) -> Path:
    path.write_text(json.dumps({"keys": [k.public_jwk(use=use, alg=alg) for k in keys]}))
    return path


def refused(run: Run, verifier: JwtVerifier, token: str) -> IdentityError:
    with pytest.raises(IdentityError) as caught:
        run(verifier.verify(token))
    return caught.value


# --- Kubernetes -----------------------------------------------------------------------------


@pytest.fixture
def cluster(
    tmp_path: Path, rsa: JwtKey, session: aiohttp.ClientSession, clock: ManualClock
) -> JwtVerifier:
    config = IssuerConfig.for_preset(
        "kubernetes",
        issuer=CLUSTER,
        audiences=[KEYMINT],
        keys=JwksPath(jwks_file(tmp_path / "cluster.json", rsa)),
    )
    return verifier_of(config, session, clock)


def sa_token(key: JwtKey, now: float, **kwargs: Any) -> str:
    return sign_token(key, kubernetes_claims(CLUSTER, KEYMINT, now, **kwargs), typ=None)


def test_service_account_token_without_a_pod(
    run: Run, cluster: JwtVerifier, rsa: JwtKey, clock: ManualClock
) -> None:
    """A TokenRequest not bound to a pod (kubectl create token) has no pod claim."""
    identity = run(cluster.verify(sa_token(rsa, clock(), pod=None)))
    assert identity.claims["namespace"] == "shop"
    assert "pod" not in identity.claims
    assert identity.provenance == {"namespace": "shop", "service_account": "web"}


@pytest.mark.parametrize(
    "overrides",
    [
        {"sub": "system:serviceaccount:kube-system:web"},  # another namespace than kubernetes.io
        {"sub": "system:serviceaccount:shop:admin"},
        {"sub": "shop:web"},
    ],
)
def test_sub_must_name_the_service_account_of_kubernetes_io(
    run: Run, cluster: JwtVerifier, rsa: JwtKey, clock: ManualClock, overrides: dict[str, Any]
) -> None:
    token = sa_token(rsa, clock(), overrides=overrides)
    assert refused(run, cluster, token).reason is Reason.INVALID_CLAIM


@pytest.mark.parametrize(
    "bound",
    [
        {"namespace": "shop"},
        {"namespace": "shop", "serviceaccount": {"name": "web"}},
        {"namespace": 7, "serviceaccount": {"name": "web", "uid": "u"}},
        {"namespace": "shop", "serviceaccount": "web"},
        {"namespace": "shop", "serviceaccount": {"name": "web", "uid": "u"}, "pod": "p"},
    ],
)
def test_kubernetes_io_must_have_its_shape(
    run: Run, cluster: JwtVerifier, rsa: JwtKey, clock: ManualClock, bound: dict[str, Any]
) -> None:
    token = sa_token(rsa, clock(), overrides={"kubernetes.io": bound})
    assert refused(run, cluster, token).reason is Reason.MISSING_CLAIM


def test_a_flat_claim_cannot_be_smuggled_at_the_top_level(
    run: Run, cluster: JwtVerifier, rsa: JwtKey, clock: ManualClock
) -> None:
    """`namespace` means kubernetes.io's namespace; a top-level claim of that name is not it."""
    token = sa_token(rsa, clock(), overrides={"namespace": "kube-system", "pod": "x"})
    identity = run(cluster.verify(token))
    assert identity.claims["namespace"] == "shop"
    assert identity.claims["pod"] == "web-7d4b9c6f5-x2x9q"


# --- JWT-SVIDs ------------------------------------------------------------------------------


@pytest.fixture
def spire(
    tmp_path: Path, ec: JwtKey, rsa: JwtKey, session: aiohttp.ClientSession, clock: ManualClock
) -> JwtVerifier:
    bundle = tmp_path / "bundle.json"
    bundle.write_text(json.dumps(trust_bundle([ec], x509_key=rsa)))
    config = IssuerConfig.for_preset(
        "spiffe_jwt",
        issuer=None,
        audiences=[KEYMINT],
        trust_domain="prod.test",
        keys=JwksPath(bundle),
    )
    return verifier_of(config, session, clock)


def test_svid_found_by_trust_domain_whatever_its_iss(
    run: Run, spire: JwtVerifier, ec: JwtKey, clock: ManualClock
) -> None:
    uri = "spiffe://prod.test/ns/shop/sa/web"
    for iss in (REMOVE, "https://spire.prod.test"):
        token = sign_token(ec, svid_claims(uri, KEYMINT, clock(), overrides={"iss": iss}))
        identity = run(spire.verify(token))
        assert identity.kind is IdentityKind.SPIFFE_JWT
        assert str(identity.spiffe_id) == uri
        assert identity.issuer == "spiffe://prod.test"
        assert identity.certificate_sha256 is None  # no certificate: no cnf in the minted token
    joseph = sign_token(ec, svid_claims(uri, KEYMINT, clock()), typ="JOSE")
    assert run(spire.verify(joseph))


@pytest.mark.parametrize(
    ("sub", "reason"),
    [
        ("spiffe://other.test/ns/shop/sa/web", Reason.UNKNOWN_ISSUER),  # no bundle for it
        ("spiffe://prod.test", Reason.MALFORMED_SPIFFE_ID),  # a trust domain, no workload
        ("spiffe://prod.test/ns/../sa/web", Reason.MALFORMED_SPIFFE_ID),
        ("spiffe://PROD.test/ns/shop", Reason.UNKNOWN_ISSUER),
    ],
)
def test_svid_subject(
    run: Run, spire: JwtVerifier, ec: JwtKey, clock: ManualClock, sub: str, reason: Reason
) -> None:
    token = sign_token(ec, svid_claims(sub, KEYMINT, clock()))
    assert refused(run, spire, token).reason is reason


def test_svid_signed_by_the_x509_authority_is_refused(
    run: Run, spire: JwtVerifier, rsa: JwtKey, clock: ManualClock
) -> None:
    """The bundle's x509-svid key verifies certificates, never a JWT-SVID."""
    token = sign_token(rsa, svid_claims("spiffe://prod.test/a", KEYMINT, clock()))
    assert refused(run, spire, token).reason is Reason.UNKNOWN_KID


def test_svid_from_another_trust_domain_with_a_bundle_key(
    run: Run,
    tmp_path: Path,
    ec: JwtKey,
    session: aiohttp.ClientSession,
    clock: ManualClock,
) -> None:
    """Two trust domains, two bundles: prod's key never vouches for a staging SPIFFE ID."""
    staging_key = JwtKey.generate("staging-1", "ES256")
    configs = []
    for domain, key in (("prod.test", ec), ("staging.test", staging_key)):
        bundle = tmp_path / f"{domain}.json"
        bundle.write_text(json.dumps(trust_bundle([key])))
        configs.append(
            IssuerConfig.for_preset(
                "spiffe_jwt",
                name=domain,
                issuer=None,
                audiences=[KEYMINT],
                trust_domain=domain,
                keys=JwksPath(bundle),
            )
        )
    verifier = JwtVerifier.from_configs(configs, session=session, clock=clock)
    forged = sign_token(ec, svid_claims("spiffe://staging.test/admin", KEYMINT, clock()))
    assert refused(run, verifier, forged).reason is Reason.UNKNOWN_KID
    honest = sign_token(staging_key, svid_claims("spiffe://staging.test/admin", KEYMINT, clock()))
    assert run(verifier.verify(honest)).subject == "spiffe://staging.test/admin"


# --- JWT-SVIDs from a SPIRE OIDC discovery provider -----------------------------------------

WORKLOAD = "spiffe://prod.test/ns/shop/sa/web"


@pytest.fixture(params=[None, "sig"], ids=["keys-without-use", "set_key_use"])
def spire_provider(
    request: pytest.FixtureRequest, run: Run, ec: JwtKey
) -> Iterator[SpireDiscoveryProvider]:
    provider = run(SpireDiscoveryProvider(keys=[ec], key_use=request.param).start())
    yield provider
    run(provider.stop())


@pytest.fixture
def spire_by_discovery(
    spire_provider: SpireDiscoveryProvider, session: aiohttp.ClientSession, clock: ManualClock
) -> JwtVerifier:
    """SPIRE configured with a `jwt_issuer`: its JWT-SVIDs carry that `iss`, and keymint finds
    their keys through that issuer's discovery document rather than a trust bundle."""
    config = IssuerConfig.for_preset(
        "spiffe_jwt",
        issuer=spire_provider.issuer,
        trust_domain="prod.test",
        audiences=[KEYMINT],
    )
    return verifier_of(config, session, clock)


def spire_svid(key: JwtKey, issuer: str, now: float, **overrides: Any) -> str:
    return sign_token(
        key, svid_claims(WORKLOAD, KEYMINT, now, overrides={"iss": issuer, **overrides})
    )


def test_svid_by_discovery_is_accepted_with_its_spiffe_id(
    run: Run,
    spire_by_discovery: JwtVerifier,
    spire_provider: SpireDiscoveryProvider,
    ec: JwtKey,
    clock: ManualClock,
) -> None:
    identity = run(spire_by_discovery.verify(spire_svid(ec, spire_provider.issuer, clock())))
    assert identity.kind is IdentityKind.SPIFFE_JWT
    assert identity.subject == WORKLOAD
    assert str(identity.spiffe_id) == WORKLOAD
    assert identity.issuer == spire_provider.issuer
    assert identity.provenance == {"spiffe_id": WORKLOAD}
    assert dict(spire_provider.served) == {"discovery": 1, "jwks": 1}


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        # The provider's key vouches for its own trust domain only.
        ({"sub": "spiffe://other.test/ns/shop/sa/web"}, Reason.WRONG_TRUST_DOMAIN),
        ({"sub": "spiffe://prod.test"}, Reason.MALFORMED_SPIFFE_ID),
        ({"aud": REMOVE}, Reason.BAD_AUDIENCE),
        ({"aud": ["https://other-service.example"]}, Reason.BAD_AUDIENCE),
        # Found by `iss` alone: an SVID without it (SPIRE with no jwt_issuer) or with another
        # one is not this issuer's, whatever trust domain its sub names.
        ({"iss": REMOVE}, Reason.UNKNOWN_ISSUER),
        ({"iss": "https://spire.other.test"}, Reason.UNKNOWN_ISSUER),
    ],
    ids=["other-trust-domain", "trust-domain-only", "no-aud", "other-aud", "no-iss", "other-iss"],
)
def test_svid_by_discovery_refused(
    run: Run,
    spire_by_discovery: JwtVerifier,
    spire_provider: SpireDiscoveryProvider,
    ec: JwtKey,
    clock: ManualClock,
    overrides: dict[str, Any],
    reason: Reason,
) -> None:
    token = spire_svid(ec, spire_provider.issuer, clock(), **overrides)
    assert refused(run, spire_by_discovery, token).reason is reason


@pytest.mark.parametrize(
    ("kid", "reason"),
    [("attacker-1", Reason.UNKNOWN_KID), (None, Reason.BAD_SIGNATURE)],
    ids=["its-own-kid", "the-providers-kid"],
)
def test_svid_signed_by_a_key_not_in_the_discovered_jwks(
    run: Run,
    spire_by_discovery: JwtVerifier,
    spire_provider: SpireDiscoveryProvider,
    clock: ManualClock,
    kid: str | None,
    reason: Reason,
) -> None:
    """A P-256 key the provider never published, under a kid of its own or the provider's."""
    attacker = JwtKey.generate(kid or spire_provider.key.kid, "ES256")
    token = spire_svid(attacker, spire_provider.issuer, clock())
    assert refused(run, spire_by_discovery, token).reason is reason
    assert spire_provider.served["jwks"] == 1  # an unknown kid forced no second fetch


# --- people ---------------------------------------------------------------------------------


@pytest.fixture
def idp(
    tmp_path: Path, rsa: JwtKey, session: aiohttp.ClientSession, clock: ManualClock
) -> JwtVerifier:
    config = IssuerConfig.for_preset(
        "oidc",
        issuer=IDP,
        audiences=["keymint-cli"],
        keys=JwksPath(jwks_file(tmp_path / "idp.json", rsa)),
    )
    return verifier_of(config, session, clock)


@pytest.mark.parametrize(
    ("verified", "kept"),
    [(True, True), ("true", True), (False, False), ("false", False), (REMOVE, False), (1, False)],
)
def test_email_only_when_verified(
    run: Run, idp: JwtVerifier, rsa: JwtKey, clock: ManualClock, verified: object, kept: bool
) -> None:
    claims = okta_claims(IDP, "keymint-cli", clock(), overrides={"email_verified": verified})
    identity = run(idp.verify(sign_token(rsa, claims)))
    assert ("email" in identity.claims) is kept
    assert ("email" in identity.provenance) is kept


def test_subject_values_cannot_forge_another_subject(
    run: Run, idp: JwtVerifier, rsa: JwtKey, clock: ManualClock
) -> None:
    """`&`, `=`, `#` and `%` in a `sub` are escaped, so no sub reads as another's subject."""
    tricky = okta_claims(IDP, "keymint-cli", clock(), overrides={"sub": "a&sub=b#c%41"})
    identity = run(idp.verify(sign_token(rsa, tricky)))
    assert identity.subject == f"{IDP}#sub=a%26sub%3Db%23c%2541"
    plain = okta_claims(IDP, "keymint-cli", clock(), overrides={"sub": "a&sub=b#cA"})
    assert run(idp.verify(sign_token(rsa, plain))).subject != identity.subject


def test_a_list_of_non_strings_is_no_list_claim(
    run: Run, idp: JwtVerifier, rsa: JwtKey, clock: ManualClock
) -> None:
    claims = okta_claims(IDP, "keymint-cli", clock(), overrides={"groups": ["a", 1, None]})
    identity = run(idp.verify(sign_token(rsa, claims)))
    assert "groups" not in identity.claim_lists


@pytest.mark.parametrize("alg", ["PS256", "ES256", "ES384", "EdDSA"])
def test_algorithms_beyond_rs256(
    run: Run,
    tmp_path: Path,
    session: aiohttp.ClientSession,
    clock: ManualClock,
    alg: str,
) -> None:
    key = JwtKey.generate(f"{alg}-key", alg)
    config = IssuerConfig.for_preset(
        "oidc",
        issuer=IDP,
        audiences=["keymint-cli"],
        algorithms=(alg,),
        keys=JwksPath(jwks_file(tmp_path / "keys.json", key)),
    )
    verifier = verifier_of(config, session, clock)
    identity = run(verifier.verify(sign_token(key, okta_claims(IDP, "keymint-cli", clock()))))
    assert identity.kind is IdentityKind.OIDC


def test_a_jwk_alg_member_restricts_its_key(
    run: Run, tmp_path: Path, rsa: JwtKey, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """An RSA key published for RS256 never verifies PS256, even where both are allowed."""
    config = IssuerConfig.for_preset(
        "oidc",
        issuer=IDP,
        audiences=["keymint-cli"],
        algorithms=("RS256", "PS256"),
        keys=JwksPath(jwks_file(tmp_path / "keys.json", rsa)),
    )
    verifier = verifier_of(config, session, clock)
    ps = JwtKey(rsa.kid, "PS256", rsa.private_key)
    token = sign_token(ps, okta_claims(IDP, "keymint-cli", clock()))
    assert refused(run, verifier, token).reason is Reason.ALG_NOT_ALLOWED
    assert run(verifier.verify(sign_token(rsa, okta_claims(IDP, "keymint-cli", clock()))))


# --- keys from a file -----------------------------------------------------------------------


def test_jwks_file_is_read_again_for_an_unknown_kid_after_the_cooldown(
    run: Run, tmp_path: Path, rsa: JwtKey, clock: ManualClock
) -> None:
    path = jwks_file(tmp_path / "cluster.json", rsa)
    source = JwksFile("cluster", path, algorithms=("RS256",), cooldown_seconds=60, clock=clock)
    assert run(source.verification_key("rsa-1")).kid == "rsa-1"
    rotated = JwtKey.generate("rsa-2", "RS256")
    jwks_file(path, rotated, rsa)
    os.utime(path, ns=(1, 1))  # a change the stamp must notice even within one mtime tick
    with pytest.raises(IdentityError) as caught:
        run(source.verification_key("rsa-2"))  # within the cooldown: not read again
    assert caught.value.reason is Reason.UNKNOWN_KID
    clock.advance(60)
    assert run(source.verification_key("rsa-2")).kid == "rsa-2"
    path.write_text("{not json")
    clock.advance(60)
    with pytest.raises(IdentityError):
        run(source.verification_key("rsa-3"))
    assert run(source.verification_key("rsa-1"))  # a broken file keeps the last good keys


@pytest.mark.parametrize(
    "content",
    [
        None,  # no file
        "{not json",
        '{"keys": []}',
        '{"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}]}',
    ],
)
def test_jwks_file_without_a_usable_key_stops_the_start(
    tmp_path: Path, content: str | None
) -> None:
    path = tmp_path / "keys.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(IdentityConfigError, match="JWKS file"):
        JwksFile("cluster", path, algorithms=("RS256",))


def test_a_private_key_in_a_jwks_file_is_not_a_verification_key(
    tmp_path: Path, rsa: JwtKey
) -> None:
    from jwt.algorithms import RSAAlgorithm

    private = RSAAlgorithm.to_jwk(rsa.private_key, as_dict=True)
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"keys": [{**private, "kid": "leaked"}]}))
    with pytest.raises(IdentityConfigError, match="no usable"):
        JwksFile("cluster", path, algorithms=("RS256",))


def test_discovered_keys_for_another_algorithm(
    run: Run, ec: JwtKey, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """Discovery serves an EC key; an RS256-only issuer finds no usable key in it."""
    issuer = run(LocalIssuer(keys=[ec]).start())
    try:
        config = IssuerConfig.for_preset("oidc", issuer=issuer.issuer, audiences=["keymint-cli"])
        verifier = verifier_of(config, session, clock)
        token = sign_token(ec, okta_claims(issuer.issuer, "keymint-cli", clock()))
        assert refused(run, verifier, token).reason is Reason.ALG_NOT_ALLOWED
        rs_header = {"alg": "RS256"}
        forged = sign_token(ec, okta_claims(issuer.issuer, "keymint-cli", clock()), rs_header)
        assert refused(run, verifier, forged).reason is Reason.ISSUER_UNREACHABLE
    finally:
        run(issuer.stop())


def test_the_jwks_cache_rules_hold_for_any_issuer(
    run: Run, ec: JwtKey, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """An ES256 IdP by discovery: one fetch per cooldown whatever asks (unknown kids included),
    and its last keys kept while it is down."""
    issuer = run(LocalIssuer(keys=[ec], max_age=60).start())
    try:
        config = IssuerConfig.for_preset(
            "oidc", issuer=issuer.issuer, audiences=["keymint-cli"], algorithms=("ES256",)
        )
        verifier = verifier_of(config, session, clock)
        claims = okta_claims(issuer.issuer, "keymint-cli", clock())
        assert run(verifier.verify(sign_token(ec, claims)))
        for kid in ("unknown-1", "unknown-2", "unknown-3"):
            stranger = sign_token(ec.with_kid(kid), claims)
            assert refused(run, verifier, stranger).reason is Reason.UNKNOWN_KID
        assert issuer.served["jwks"] == 1
        run(issuer.stop())  # the IdP goes down past the keys' freshness
        clock.advance(3600)
        fresh = okta_claims(issuer.issuer, "keymint-cli", clock())
        assert run(verifier.verify(sign_token(ec, fresh)))  # stale keys still serve
    finally:
        run(issuer.stop())
