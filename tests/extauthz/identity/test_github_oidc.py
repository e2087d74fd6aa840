"""GitHub Actions OIDC: an honest token, and each known attack refused with its reason."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization

from extauthz.dev.github import (
    DEFAULT_AUDIENCE,
    REMOVE,
    LocalOidcIssuer,
    SigningKey,
    b64url,
    compact_jws,
    hs256_signer,
    rs256_signer,
)
from extauthz.identity import (
    GITHUB_ISSUER,
    GitHubOidcVerifier,
    IdentityConfigError,
    IdentityError,
    MissingCredential,
    Reason,
    enterprise_issuer,
    ghes_issuer,
    github_subject,
    token_reference,
)
from extauthz.model import IdentityKind
from tests.extauthz.identity.conftest import TEST_JWKS_SETTINGS
from tests.helpers import ManualClock, Run


def refusal(run: Run, verifier: GitHubOidcVerifier, token: str | bytes) -> IdentityError:
    with pytest.raises(IdentityError) as caught:
        run(verifier.verify(token))
    error = caught.value
    # Messages are loggable: never the token, only its reference.
    text = token.decode() if isinstance(token, bytes) else token
    assert not text or text not in str(error)
    return error


def reason_of(run: Run, verifier: GitHubOidcVerifier, token: str | bytes) -> Reason:
    return refusal(run, verifier, token).reason


# --- the honest token ---------------------------------------------------------------------


def test_valid_token(run: Run, verifier: GitHubOidcVerifier, issuer: LocalOidcIssuer) -> None:
    token = issuer.mint()
    identity = run(verifier.verify(token))
    claims = issuer.claims()
    assert identity.kind is IdentityKind.GITHUB_ACTIONS
    assert identity.subject == f"{issuer.issuer}#repository_owner_id=65&repository_id=74"
    assert identity.claims["sub"] == "repo:octo-org/octo-repo:environment:prod"  # provenance
    assert identity.issuer == issuer.issuer
    assert identity.credential_hash == hashlib.sha256(token.encode()).hexdigest()
    assert identity.expires_at == claims["exp"]
    assert identity.evidence.kind == "oidc_token"
    assert identity.evidence.value == token.encode()
    assert identity.claims["repository_id"] == "74"
    assert identity.claims["repository_owner_id"] == "65"
    assert identity.claims["aud"] == DEFAULT_AUDIENCE
    assert "exp" not in identity.claims  # only string-valued claims
    assert all(isinstance(v, str) for v in identity.claims.values())


def test_token_as_bytes(run: Run, verifier: GitHubOidcVerifier, issuer: LocalOidcIssuer) -> None:
    identity = run(verifier.verify(issuer.mint().encode()))
    assert identity.subject == github_subject(issuer.issuer, "65", "74")


def test_typ_may_be_absent(run: Run, verifier: GitHubOidcVerifier, issuer: LocalOidcIssuer) -> None:
    assert run(verifier.verify(issuer.mint(header_overrides={"typ": REMOVE})))


def test_long_lived_token_expires_at_max_age(
    run: Run, verifier: GitHubOidcVerifier, issuer: LocalOidcIssuer, clock: ManualClock
) -> None:
    iat = int(clock())
    identity = run(verifier.verify(issuer.mint({"exp": iat + 3000})))
    assert identity.expires_at == iat + 600


def test_missing_token(run: Run, verifier: GitHubOidcVerifier) -> None:
    with pytest.raises(MissingCredential):
        run(verifier.verify(""))


# --- algorithm and key confusion ---------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none(
    run: Run, verifier: GitHubOidcVerifier, issuer: LocalOidcIssuer, alg: str
) -> None:
    token = compact_jws(issuer.header({"alg": alg}), issuer.claims(), None)
    assert reason_of(run, verifier, token) is Reason.ALG_NOT_ALLOWED


def test_hs256_keyed_with_the_public_key(
    run: Run, verifier: GitHubOidcVerifier, issuer: LocalOidcIssuer
) -> None:
    public_pem = issuer.signing_key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    token = compact_jws(issuer.header({"alg": "HS256"}), issuer.claims(), hs256_signer(public_pem))
    assert reason_of(run, verifier, token) is Reason.ALG_NOT_ALLOWED
    assert issuer.served["discovery"] == 0  # refused before any key was looked up


@pytest.mark.parametrize("alg", ["ES256", "EdDSA", "RS512", "PS256", "rs256", "", None, 256])
def test_other_algorithms(
    run: Run, verifier: GitHubOidcVerifier, issuer: LocalOidcIssuer, alg: object
) -> None:
    token = issuer.mint(header_overrides={"alg": alg})
    assert reason_of(run, verifier, token) is Reason.ALG_NOT_ALLOWED


def test_alg_missing(run: Run, verifier: GitHubOidcVerifier, issuer: LocalOidcIssuer) -> None:
    token = issuer.mint(header_overrides={"alg": REMOVE})
    assert reason_of(run, verifier, token) is Reason.ALG_NOT_ALLOWED


def test_unknown_kid(run: Run, verifier: GitHubOidcVerifier, issuer: LocalOidcIssuer) -> None:
    token = issuer.mint(header_overrides={"kid": "not-published"})
    assert reason_of(run, verifier, token) is Reason.UNKNOWN_KID


@pytest.mark.parametrize("kid", [REMOVE, "", 7, None, "k" * 257])
def test_unusable_kid(
    run: Run, verifier: GitHubOidcVerifier, issuer: LocalOidcIssuer, kid: object
) -> None:
    token = issuer.mint(header_overrides={"kid": kid})
    assert reason_of(run, verifier, token) is Reason.MISSING_KID


@pytest.fixture
def attacker(
    run: Run, clock: ManualClock, rsa_keys: dict[str, SigningKey]
) -> Iterator[LocalOidcIssuer]:
    """A second issuer the attacker controls, publishing the attacker's key as `key-1`."""
    stolen_name = SigningKey("key-1", rsa_keys["attacker"].private_key)
    attacker = run(LocalOidcIssuer(clock=clock, keys=[stolen_name]).start())
    yield attacker
    run(attacker.stop())


@pytest.mark.parametrize("member", ["jku", "x5u"])
def test_key_urls_in_the_header_are_never_fetched(
    run: Run,
    verifier: GitHubOidcVerifier,
    issuer: LocalOidcIssuer,
    attacker: LocalOidcIssuer,
    member: str,
) -> None:
    url = attacker.jwks_uri if member == "jku" else attacker.issuer + "/cert.pem"
    # Claims say our issuer; signed by the attacker's key under our kid; header points away.
    token = issuer.mint(header_overrides={member: url}, key=attacker.signing_key)
    assert reason_of(run, verifier, token) is Reason.BAD_SIGNATURE
    assert attacker.served == {}
    assert issuer.served["jwks"] == 1  # the key tried was ours, from our issuer's JWKS


def test_embedded_jwk_is_ignored(
    run: Run, verifier: GitHubOidcVerifier, issuer: LocalOidcIssuer, attacker: LocalOidcIssuer
) -> None:
    jwk = attacker.signing_key.public_jwk()
    token = issuer.mint(header_overrides={"jwk": jwk}, key=attacker.signing_key)
    assert reason_of(run, verifier, token) is Reason.BAD_SIGNATURE


def test_embedded_x5c_is_ignored(
    run: Run, verifier: GitHubOidcVerifier, issuer: LocalOidcIssuer, attacker: LocalOidcIssuer
) -> None:
    token = issuer.mint(header_overrides={"x5c": ["MIIBfake"]}, key=attacker.signing_key)
    assert reason_of(run, verifier, token) is Reason.BAD_SIGNATURE


def test_honest_token_with_key_headers_still_verifies_with_jwks_key(
    run: Run, verifier: GitHubOidcVerifier, issuer: LocalOidcIssuer, attacker: LocalOidcIssuer
) -> None:
    token = issuer.mint(header_overrides={"jku": attacker.jwks_uri})
    assert run(verifier.verify(token))
    assert attacker.served == {}


def test_tampered_payload(run: Run, verifier: GitHubOidcVerifier, issuer: LocalOidcIssuer) -> None:
    header, _, signature = issuer.mint().split(".")
    forged = compact_jws({}, issuer.claims({"repository_id": "1"}), None).split(".")[1]
    assert reason_of(run, verifier, f"{header}.{forged}.{signature}") is Reason.BAD_SIGNATURE


# --- header shape -----------------------------------------------------------------------


@pytest.mark.parametrize("typ", ["at+jwt", "JWS", "jwt", "", None])
def test_bad_typ(
    run: Run, verifier: GitHubOidcVerifier, issuer: LocalOidcIssuer, typ: object
) -> None:
    token = issuer.mint(header_overrides={"typ": typ})
    assert reason_of(run, verifier, token) is Reason.BAD_TOKEN_TYPE


@pytest.mark.parametrize("members", [{"crit": ["exp"], "exp": 1}, {"b64": False, "crit": ["b64"]}])
def test_crit_is_refused(
    run: Run, verifier: GitHubOidcVerifier, issuer: LocalOidcIssuer, members: dict[str, Any]
) -> None:
    token = issuer.mint(header_overrides=members)
    assert reason_of(run, verifier, token) is Reason.CRIT_NOT_SUPPORTED


# --- time ------------------------------------------------------------------------------


def test_expired(
    run: Run, verifier: GitHubOidcVerifier, issuer: LocalOidcIssuer, clock: ManualClock
) -> None:
    token = issuer.mint()
    clock.advance(300 + 30)  # lifetime + leeway
    assert reason_of(run, verifier, token) is Reason.TOKEN_EXPIRED


def test_expiry_within_leeway_is_accepted(
    run: Run, verifier: GitHubOidcVerifier, issuer: LocalOidcIssuer, clock: ManualClock
) -> None:
    token = issuer.mint()
    clock.advance(300 + 29)
    assert run(verifier.verify(token))


def test_not_yet_valid(
    run: Run, verifier: GitHubOidcVerifier, issuer: LocalOidcIssuer, clock: ManualClock
) -> None:
    now = int(clock())
    assert reason_of(run, verifier, issuer.mint({"nbf": now + 31})) is Reason.TOKEN_NOT_YET_VALID
    assert run(verifier.verify(issuer.mint({"nbf": now + 30})))


def test_issued_in_the_future(
    run: Run, verifier: GitHubOidcVerifier, issuer: LocalOidcIssuer, clock: ManualClock
) -> None:
    now = int(clock())
    token = issuer.mint({"iat": now + 120, "nbf": now, "exp": now + 400})
    assert reason_of(run, verifier, token) is Reason.IAT_IN_FUTURE


def test_too_old(
    run: Run, verifier: GitHubOidcVerifier, issuer: LocalOidcIssuer, clock: ManualClock
) -> None:
    now = int(clock())
    token = issuer.mint({"iat": now - 700, "nbf": now - 700, "exp": now + 2000})
    assert reason_of(run, verifier, token) is Reason.TOKEN_TOO_OLD


def test_upstream_token_living_longer_than_its_issuer_allows_is_refused(
    run: Run, verifier: GitHubOidcVerifier, issuer: LocalOidcIssuer, clock: ManualClock
) -> None:
    """exp - iat beyond the configured maximum (default 3600 s; GitHub's live 300 s) is refused
    on its own reason, even while the token is young, unexpired and correctly signed."""
    now = int(clock())
    error = refusal(run, verifier, issuer.mint({"iat": now, "nbf": now, "exp": now + 3601}))
    assert error.reason is Reason.TOKEN_LIFETIME_TOO_LONG
    assert "token lives 3601 s (exp - iat), over the 3600 s" in error.message
    a_year = issuer.mint({"iat": now, "nbf": now, "exp": now + 365 * 86400})
    assert reason_of(run, verifier, a_year) is Reason.TOKEN_LIFETIME_TOO_LONG
    assert run(verifier.verify(issuer.mint({"iat": now, "nbf": now, "exp": now + 3600})))


def test_the_maximum_lifetime_is_configurable(
    run: Run, issuer: LocalOidcIssuer, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    def verifier(max_lifetime: float) -> GitHubOidcVerifier:
        return GitHubOidcVerifier.for_issuers(
            [issuer.issuer],
            audiences=[DEFAULT_AUDIENCE],
            session=session,
            jwks_settings=TEST_JWKS_SETTINGS,
            max_lifetime_seconds=max_lifetime,
            clock=clock,
        )

    now = int(clock())
    published_sample = issuer.mint({"iat": now, "nbf": now, "exp": now + 21600})
    assert run(verifier(21600).verify(published_sample))
    assert reason_of(run, verifier(300), issuer.mint({"exp": now + 301})) is (
        Reason.TOKEN_LIFETIME_TOO_LONG
    )
    assert run(verifier(300).verify(issuer.mint({"iat": now, "exp": now + 300})))
    with pytest.raises(IdentityConfigError):
        verifier(0)


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": True},
        {"exp": "1900000300"},
        {"exp": 1e300},
        {"exp": 10**400},  # too large for a float: must not escape as OverflowError
        {"nbf": -(10**400)},
        {"iat": -5},
        {"nbf": [1]},
        {"exp": 1_800_000_000},  # exp before iat
    ],
)
def test_nonsense_dates(
    run: Run, verifier: GitHubOidcVerifier, issuer: LocalOidcIssuer, claims: dict[str, Any]
) -> None:
    assert reason_of(run, verifier, issuer.mint(claims)) in (
        Reason.INVALID_CLAIM,
        Reason.MALFORMED_TOKEN,
    )


# --- issuer and audience -----------------------------------------------------------------


@pytest.mark.parametrize("iss", [GITHUB_ISSUER, "http://127.0.0.1:1", "", None, 5, ["x"], REMOVE])
def test_wrong_issuer(
    run: Run, verifier: GitHubOidcVerifier, issuer: LocalOidcIssuer, iss: object
) -> None:
    assert reason_of(run, verifier, issuer.mint({"iss": iss})) is Reason.UNKNOWN_ISSUER
    assert issuer.served == {}  # no key fetched for a token that is not for us


@pytest.mark.parametrize(
    "aud",
    [
        "https://other-service.example",
        "https://github.com/octo-org",  # GitHub's default audience
        [DEFAULT_AUDIENCE, "https://other-service.example"],
        [DEFAULT_AUDIENCE],
        None,
        REMOVE,
    ],
)
def test_wrong_audience(
    run: Run, verifier: GitHubOidcVerifier, issuer: LocalOidcIssuer, aud: object
) -> None:
    assert reason_of(run, verifier, issuer.mint({"aud": aud})) is Reason.BAD_AUDIENCE


@pytest.mark.parametrize(
    "audiences",
    [
        [],
        [""],
        ["https://github.com/octo-org"],
        [DEFAULT_AUDIENCE, "https://GitHub.com/octo-org"],
        ["https://ghes.example.com/octo-org"],  # the GHES instance's default
    ],
)
def test_unsafe_audience_configuration_is_refused(
    session: aiohttp.ClientSession, audiences: list[str]
) -> None:
    with pytest.raises(IdentityConfigError):
        GitHubOidcVerifier.for_issuers(
            [GITHUB_ISSUER, ghes_issuer("ghes.example.com")], audiences=audiences, session=session
        )


def test_issuer_configuration_is_required(session: aiohttp.ClientSession) -> None:
    with pytest.raises(IdentityConfigError):
        GitHubOidcVerifier.for_issuers([], audiences=[DEFAULT_AUDIENCE], session=session)


# Empty ones: urlsplit sees no fragment or query in them, the subject's "#" would.
@pytest.mark.parametrize("bad", [f"{GITHUB_ISSUER}#", f"{GITHUB_ISSUER}?"])
def test_issuers_with_a_query_or_fragment_are_refused(
    session: aiohttp.ClientSession, bad: str
) -> None:
    with pytest.raises(IdentityConfigError, match="query or a fragment"):
        GitHubOidcVerifier.for_issuers([bad], audiences=[DEFAULT_AUDIENCE], session=session)


def test_issuer_shapes() -> None:
    assert ghes_issuer("ghes.example.com") == "https://ghes.example.com/_services/token"
    assert enterprise_issuer("avocado-corp") == f"{GITHUB_ISSUER}/avocado-corp"


def test_several_issuers(
    run: Run,
    clock: ManualClock,
    session: aiohttp.ClientSession,
    rsa_keys: dict[str, SigningKey],
) -> None:
    """github.com-, GHES- and enterprise-shaped issuers side by side; keys never cross over."""
    paths = ["", "/_services/token", "/avocado-corp"]
    issuers = [
        run(LocalOidcIssuer(clock=clock, keys=[rsa_keys[kid]], path=path).start())
        for kid, path in zip(["key-1", "key-2", "attacker"], paths, strict=True)
    ]
    try:
        verifier = GitHubOidcVerifier.for_issuers(
            [i.issuer for i in issuers],
            audiences=[DEFAULT_AUDIENCE],
            session=session,
            jwks_settings=TEST_JWKS_SETTINGS,
            clock=clock,
        )
        subjects = set()
        for one in issuers:
            identity = run(verifier.verify(one.mint()))
            assert identity.issuer == one.issuer
            subjects.add(identity.subject)
        # The same ids under three issuers are three repositories, so three subjects.
        assert subjects == {github_subject(i.issuer, "65", "74") for i in issuers}
        assert len(subjects) == 3
        # Issuer 0's claims, signed with issuer 1's key (kid key-2 is unknown to issuer 0).
        crossed = issuers[0].mint(key=issuers[1].signing_key)
        assert reason_of(run, verifier, crossed) is Reason.UNKNOWN_KID
    finally:
        for one in issuers:
            run(one.stop())


# --- required claims ---------------------------------------------------------------------


@pytest.mark.parametrize("claim", ["exp", "iat", "nbf", "sub"])
def test_missing_required_claim(
    run: Run, verifier: GitHubOidcVerifier, issuer: LocalOidcIssuer, claim: str
) -> None:
    assert reason_of(run, verifier, issuer.mint({claim: REMOVE})) is Reason.MISSING_CLAIM


@pytest.mark.parametrize("claim", ["repository_id", "repository_owner_id"])
@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (REMOVE, Reason.MISSING_CLAIM),
        (74, Reason.MISSING_CLAIM),
        ("octo", Reason.INVALID_CLAIM),
        ("", Reason.INVALID_CLAIM),
    ],
)
def test_github_ids_must_be_id_strings(
    run: Run,
    verifier: GitHubOidcVerifier,
    issuer: LocalOidcIssuer,
    claim: str,
    value: object,
    reason: Reason,
) -> None:
    assert reason_of(run, verifier, issuer.mint({claim: value})) is reason


def test_claims_must_be_valid_unicode(
    run: Run, verifier: GitHubOidcVerifier, issuer: LocalOidcIssuer
) -> None:
    token = issuer.mint({"environment": "\ud800"})  # a lone surrogate, legal JSON escape
    assert reason_of(run, verifier, token) is Reason.INVALID_CLAIM


def test_minted_subject_is_the_numeric_ids_never_the_recyclable_names(
    run: Run, verifier: GitHubOidcVerifier, issuer: LocalOidcIssuer
) -> None:
    """The upstream `sub` names the repository, and names are recycled after a rename or a
    deletion; the subject that revocations, rate limits and the guard compare is the ids."""
    original = run(verifier.verify(issuer.mint()))
    renamed = run(
        verifier.verify(
            issuer.mint(
                {
                    "sub": "repo:new-org/new-name:environment:prod",
                    "repository": "new-org/new-name",
                    "repository_owner": "new-org",
                }
            )
        )
    )
    assert renamed.subject == original.subject  # same ids: the same repository
    recycled = run(verifier.verify(issuer.mint({"repository_id": "1234"})))
    assert recycled.claims["sub"] == original.claims["sub"]  # same names ...
    assert recycled.subject != original.subject  # ... another repository
    assert recycled.subject == f"{issuer.issuer}#repository_owner_id=65&repository_id=1234"


def test_empty_sub(run: Run, verifier: GitHubOidcVerifier, issuer: LocalOidcIssuer) -> None:
    assert reason_of(run, verifier, issuer.mint({"sub": ""})) is Reason.MISSING_CLAIM


# --- malformed input ---------------------------------------------------------------------


def _segment(text: str) -> str:
    return b64url(text.encode())


GOOD_HEADER = _segment('{"alg":"RS256","typ":"JWT","kid":"key-1"}')
TWO_ALGS = _segment('{"alg":"RS256","alg":"none","kid":"key-1"}')  # duplicate member name
NOT_JSON = _segment("{not json")
NAN = _segment('{"exp": NaN}')
DEEP = _segment("[" * 2000 + "]" * 2000)  # deeper than the recursion limit
NOT_UTF8 = b64url(b"\xff\xfe")


@pytest.mark.parametrize(
    "token",
    [
        "abc",
        "a.b",
        "a.b.c.d",
        "....",
        "aaaaa.",
        GOOD_HEADER + ".e30",  # two parts
        "!!!.e30.c2ln",  # not base64url
        NOT_JSON + ".e30.c2ln",
        _segment("[1, 2]") + ".e30.c2ln",  # header not an object
        TWO_ALGS + ".e30.c2ln",
        GOOD_HEADER + ".e30.",  # no signature
        GOOD_HEADER + ".e30.c2ln=",  # padding is not base64url
        GOOD_HEADER + ".e30a.c2ln",  # impossible base64 length
        GOOD_HEADER + "." + NOT_JSON + ".c2ln",
        GOOD_HEADER + "." + NAN + ".c2ln",
        GOOD_HEADER + "." + DEEP + ".c2ln",
        GOOD_HEADER + "." + NOT_UTF8 + ".c2ln",
        GOOD_HEADER + ".e30.c2ln\u00e9",  # not ASCII
    ],
)
def test_malformed_tokens(run: Run, verifier: GitHubOidcVerifier, token: str) -> None:
    assert reason_of(run, verifier, token) is Reason.MALFORMED_TOKEN


def test_oversized_token_is_refused_before_parsing(run: Run, verifier: GitHubOidcVerifier) -> None:
    assert reason_of(run, verifier, "x" * (8 * 1024 + 1)) is Reason.TOKEN_TOO_LARGE


def test_oversized_but_well_formed_token(
    run: Run, verifier: GitHubOidcVerifier, issuer: LocalOidcIssuer
) -> None:
    token = issuer.mint({"padding": "p" * 7000})
    assert reason_of(run, verifier, token) is Reason.TOKEN_TOO_LARGE


def test_message_names_the_token_only_by_reference(
    run: Run, verifier: GitHubOidcVerifier, issuer: LocalOidcIssuer, clock: ManualClock
) -> None:
    token = issuer.mint()
    clock.advance(3600)
    error = refusal(run, verifier, token)
    assert token_reference(token) in str(error)
    assert token.split(".")[1] not in str(error)


def test_signature_with_an_unpublished_key(
    run: Run, verifier: GitHubOidcVerifier, issuer: LocalOidcIssuer, rsa_keys: dict[str, SigningKey]
) -> None:
    header = issuer.header()
    token = compact_jws(header, issuer.claims(), rs256_signer(rsa_keys["attacker"].private_key))
    assert reason_of(run, verifier, token) is Reason.BAD_SIGNATURE
