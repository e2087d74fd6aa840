"""The signer's guard: a message per rule that breaks exactly that rule; nothing else escapes.

The real `EvidenceChecker` lives in the gateway package; here a fixed decision (or refusal) stands
in for it, so each test controls what the evidence "verified" and what policy "granted".
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypedDict

import pytest
from hypothesis import given
from hypothesis import strategies as st

from signer.budget import BudgetSettings, EvidenceBudget
from signer.endorsement import ENDORSEMENT_RULES
from signer.guard import (
    CORE_CLAIMS,
    RULES,
    AcceptedToken,
    EvidenceDecision,
    Guard,
    GuardConfigError,
    GuardEvidence,
    GuardLimits,
    GuardRefusal,
)
from signer.proto import signer_pb2
from signer.token import b64url, header_for, kid_for, signing_input

NOW = 1_900_000_000
ISSUER = "https://keymint.example.org"
GROUP_KEY = bytes(range(32))
LIMITS = GuardLimits.for_group_key(GROUP_KEY, issuer=ISSUER, max_ttl_seconds=900)
KID = kid_for(GROUP_KEY)
CERT_SHA256 = hashlib.sha256(b"the leaf certificate's DER").digest()
CERTIFICATE_CNF = {"x5t#S256": b64url(CERT_SHA256)}
OTHER_CNF = {"x5t#S256": b64url(bytes(32))}
SECRET = b"EVIDENCE-SECRET"  # in every evidence value; must never reach a refusal

GITHUB_SUBJECT = "repo:acme/deploy:ref:refs/heads/main"
SPIFFE_SUBJECT = "spiffe://example.org/ns/prod/sa/deployer"


class Route(TypedDict):
    host: str
    path: str
    method: str


ROUTE = Route(host="deploy.internal", path="/v1/releases", method="POST")

Outcome = EvidenceDecision | GuardRefusal


@dataclass(frozen=True)
class RevokedSubjects:
    subjects: frozenset[str]

    def subject_revoked(self, subject: str) -> bool:
        return subject in self.subjects


class FixedChecker:
    """Stands in for the gateway's checker: returns (or raises) one outcome, records each call."""

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome
        self.calls: list[tuple[GuardEvidence, float]] = []

    def check(self, evidence: GuardEvidence, now: float) -> EvidenceDecision:
        self.calls.append((evidence, now))
        if isinstance(self.outcome, GuardRefusal):
            raise self.outcome
        return self.outcome


@dataclass
class Case:
    """A message, its evidence and the checker's outcome; mutations edit it in place."""

    header: dict[str, Any]
    claims: dict[str, Any]
    evidence: GuardEvidence | None
    outcome: Outcome
    message: bytes | None = None  # replaces the encoding of header and claims
    revoked: frozenset[str] = frozenset()  # subjects on the signer's own revocation list
    budget: EvidenceBudget | None = None  # None: unlimited
    limits: GuardLimits = LIMITS

    def encoded(self) -> bytes:
        if self.message is not None:
            return self.message
        return signing_input(self.header, self.claims)

    def guard(self, checker: FixedChecker | None = None) -> Guard:
        checker = checker or FixedChecker(self.outcome)
        return Guard(
            limits=self.limits,
            evidence_checker=checker,
            revocations=RevokedSubjects(self.revoked),
            budget=self.budget,
            clock=lambda: NOW,
        )

    def run(self) -> AcceptedToken:
        return self.guard().check(self.encoded(), self.evidence)


def oidc_case() -> Case:
    """A GitHub Actions caller's token, accepted as is."""
    return Case(
        header=dict(header_for(GROUP_KEY)),
        claims={
            "iss": ISSUER,
            "sub": GITHUB_SUBJECT,
            "aud": "deploy-api",
            "scope": "deploy:read deploy:write",
            "iat": NOW,
            "nbf": NOW,
            "exp": NOW + 600,
            "jti": "2f1c9a0e-jti",
            "repository_id": "123456",
        },
        evidence=GuardEvidence(
            kind="oidc_token",
            value=b"eyJhbGciOiJSUzI1NiJ9." + SECRET + b".sig",
            context_extensions={"audience": "deploy-api"},
            **ROUTE,
        ),
        outcome=EvidenceDecision(
            subject=GITHUB_SUBJECT,
            audiences=frozenset({"deploy-api", "status-api"}),
            scopes=frozenset({"deploy:read", "deploy:write", "status:read"}),
            max_ttl_seconds=900,
            credential_expires_at=NOW + 3600,
            provenance={"repository_id": "123456"},
            credential_id=hashlib.sha256(b"the token's claims").digest(),
        ),
    )


def certificate_case() -> Case:
    """An mTLS caller's token, bound to its certificate, accepted as is."""
    case = oidc_case()
    del case.claims["repository_id"]
    case.claims.update(sub=SPIFFE_SUBJECT, spiffe_id=SPIFFE_SUBJECT, cnf=CERTIFICATE_CNF)
    case.evidence = GuardEvidence(
        kind="certificate",
        value=b"-----BEGIN CERTIFICATE-----\n" + SECRET + b"\n-----END CERTIFICATE-----\n",
        **ROUTE,
    )
    case.outcome = EvidenceDecision(
        subject=SPIFFE_SUBJECT,
        audiences=frozenset({"deploy-api"}),
        scopes=frozenset({"deploy:read", "deploy:write"}),
        max_ttl_seconds=900,
        certificate_sha256=CERT_SHA256,
        provenance={"spiffe_id": SPIFFE_SUBJECT},
    )
    return case


# Mutations: small edits to a Case, composed by on_oidc / on_certificate into the table below.
Mutation = Callable[[Case], None]


def claims(**values: Any) -> Mutation:
    return lambda case: case.claims.update(values)


def drop_claim(name: str) -> Mutation:
    return lambda case: case.claims.pop(name) and None


def header(**values: Any) -> Mutation:
    return lambda case: case.header.update(values)


def drop_header(name: str) -> Mutation:
    return lambda case: case.header.pop(name) and None


def decision(**changes: Any) -> Mutation:
    def mutate(case: Case) -> None:
        assert isinstance(case.outcome, EvidenceDecision)
        case.outcome = replace(case.outcome, **changes)

    return mutate


def checker_refuses(rule: str) -> Mutation:
    def mutate(case: Case) -> None:
        case.outcome = GuardRefusal(rule, "the stand-in checker refused")

    return mutate


def evidence(**changes: Any) -> Mutation:
    def mutate(case: Case) -> None:
        assert case.evidence is not None
        case.evidence = replace(case.evidence, **changes)

    return mutate


def no_evidence(case: Case) -> None:
    case.evidence = None


def revoked(subject: str) -> Mutation:
    return lambda case: setattr(case, "revoked", frozenset({subject}))


def key_lowered(case: Case) -> None:
    """The key the header names needs 2 signers; the deployment's FROST_T is 3."""
    case.limits = replace(LIMITS, threshold=2, min_threshold=3)


def budget_spent(case: Case) -> None:
    """The credential has already backed as many shares as a budget of 2 allows."""
    case.budget = EvidenceBudget(BudgetSettings(limit=2, window_seconds=900), clock=lambda: NOW)
    assert isinstance(case.outcome, EvidenceDecision)
    credential = case.outcome.credential_id
    assert credential is not None
    case.budget.spend(credential)
    case.budget.spend(credential)
    assert case.budget.remaining(credential) == 0


def segment(value: Any, separators: tuple[str, str] | None = (",", ":")) -> str:
    return b64url(json.dumps(value, separators=separators, sort_keys=True).encode())


def raw(build: Callable[[Case], bytes]) -> Mutation:
    def mutate(case: Case) -> None:
        case.message = build(case)

    return mutate


def append(suffix: bytes) -> Mutation:
    return raw(lambda case: case.encoded() + suffix)


def header_text(text: str) -> Mutation:
    """Header JSON as written, so it can hold what json.dumps never writes."""
    return raw(lambda case: f"{b64url(text.encode())}.{segment(case.claims)}".encode())


def claims_text(text: str) -> Mutation:
    return raw(lambda case: f"{segment(case.header)}.{b64url(text.encode())}".encode())


def spaced(case: Case) -> None:
    """json.dumps' default separators, which put a space after ',' and ':'."""
    case.message = f"{segment(case.header)}.{segment(case.claims, separators=None)}".encode()


def on_oidc(*mutations: Mutation) -> Callable[[], Case]:
    return lambda: _apply(oidc_case(), mutations)


def on_certificate(*mutations: Mutation) -> Callable[[], Case]:
    return lambda: _apply(certificate_case(), mutations)


def _apply(case: Case, mutations: tuple[Mutation, ...]) -> Case:
    for mutate in mutations:
        mutate(case)
    return case


# Python's json keeps the last "alg"; a verifier that keeps the first would see "none".
DUPLICATE_ALG = f'{{"alg":"none","alg":"EdDSA","kid":"{KID}","typ":"at+jwt"}}'
UNSORTED_HEADER = f'{{"typ":"at+jwt","kid":"{KID}","alg":"EdDSA"}}'
HEADER_EXTRAS = {
    "jku": "https://evil.example/jwks.json",
    "x5u": "https://evil.example/cert.pem",
    "jwk": {"kty": "OKP", "crv": "Ed25519", "x": b64url(bytes(32))},
    "crit": ["exp"],
    "cty": "JWT",
}
MISTYPED_CLAIMS: list[tuple[str, Any]] = [
    ("iss", None),
    ("sub", 42),
    ("sub", ""),
    ("aud", ["deploy-api"]),
    ("aud", ""),
    ("jti", ""),
    ("iat", True),
    ("nbf", float(NOW)),
    ("exp", str(NOW + 600)),
    ("scope", ["deploy:read"]),
    ("scope", "deploy:read  deploy:write"),
    ("scope", " deploy:read"),
    ("scope", 'deploy:"read"'),
    ("exp", NOW + 600.5),
]
# On a certificate caller's token, so that only the shape of cnf is wrong.
MISTYPED_CNF: list[Any] = ["thumbprint", {**CERTIFICATE_CNF, "jkt": "x"}, {"x5t#S256": 7}, None]

# A policy granting more lifetime than the signer's limit, so only the limit is broken.
GENEROUS_POLICY = decision(max_ttl_seconds=10**9, credential_expires_at=None)

# (id, case builder, the rule it breaks). Each case breaks that rule and no other.
BROKEN: list[tuple[str, Callable[[], Case], str]] = [
    ("random text", on_oidc(raw(lambda _: b"not a jwt at all")), "not_a_token"),
    ("three segments", on_oidc(append(b".c2ln")), "not_a_token"),
    ("claims an array", on_oidc(claims_text("[1]")), "not_a_token"),
    ("not ascii", on_oidc(append("é".encode())), "not_a_token"),
    ("padded base64", on_oidc(append(b"==")), "not_a_token"),
    ("nested too deep", on_oidc(claims_text("[" * 5000 + "]" * 5000)), "not_a_token"),
    ("over the size limit", on_oidc(claims(jti="x" * 20_000)), "not_a_token"),
    ("duplicate alg", on_oidc(header_text(DUPLICATE_ALG)), "not_canonical"),
    ("unsorted members", on_oidc(header_text(UNSORTED_HEADER)), "not_canonical"),
    ("whitespace", on_oidc(spaced), "not_canonical"),
    ("alg none", on_oidc(header(alg="none")), "header_alg"),
    ("alg HS256", on_oidc(header(alg="HS256")), "header_alg"),
    ("alg Ed25519", on_oidc(header(alg="Ed25519")), "header_alg"),
    ("alg absent", on_oidc(drop_header("alg")), "header_alg"),
    ("typ JWT", on_oidc(header(typ="JWT")), "header_typ"),
    ("typ absent", on_oidc(drop_header("typ")), "header_typ"),
    ("kid of another key", on_oidc(header(kid=kid_for(bytes(32)))), "header_kid"),
    ("kid absent", on_oidc(drop_header("kid")), "header_kid"),
    *[(f"header {n}", on_oidc(header(**{n: v})), "header_extra") for n, v in HEADER_EXTRAS.items()],
    ("a key below FROST_T", on_oidc(key_lowered), "key_threshold"),
    *[(f"{n} absent", on_oidc(drop_claim(n)), "claims_missing") for n in sorted(CORE_CLAIMS)],
    *[(f"{n} {v!r}", on_oidc(claims(**{n: v})), "claims_type") for n, v in MISTYPED_CLAIMS],
    *[(f"cnf {v!r}", on_certificate(claims(cnf=v)), "claims_type") for v in MISTYPED_CNF],
    ("another issuer", on_oidc(claims(iss="https://evil.example")), "issuer"),
    ("issuer with a slash", on_oidc(claims(iss=ISSUER + "/")), "issuer"),
    ("exp at iat", on_oidc(claims(iat=NOW + 30, nbf=NOW + 30, exp=NOW + 30)), "ttl_not_positive"),
    (
        "exp before iat",
        on_oidc(claims(iat=NOW + 30, nbf=NOW + 30, exp=NOW + 1)),
        "ttl_not_positive",
    ),
    ("ttl one over", on_oidc(claims(exp=NOW + 901), GENEROUS_POLICY), "ttl_exceeded"),
    ("ttl a year", on_oidc(claims(exp=NOW + 365 * 86400), GENEROUS_POLICY), "ttl_exceeded"),
    ("iat in the past", on_oidc(claims(iat=NOW - 61)), "iat_skew"),
    ("iat in the future", on_oidc(claims(iat=NOW + 61)), "iat_skew"),
    ("nbf in the past", on_oidc(claims(nbf=NOW - 61)), "nbf_skew"),
    ("nbf in the future", on_oidc(claims(nbf=NOW + 61)), "nbf_skew"),
    (
        "iat past float range",
        on_oidc(claims(iat=10**400, exp=10**400 + 600), GENEROUS_POLICY),
        "iat_skew",
    ),
    ("exp now", on_oidc(claims(iat=NOW - 30, nbf=NOW - 30, exp=NOW)), "expired"),
    ("exp past", on_oidc(claims(iat=NOW - 50, nbf=NOW - 50, exp=NOW - 20)), "expired"),
    ("subject revoked here", on_oidc(revoked(GITHUB_SUBJECT)), "subject_revoked"),
    ("no evidence", on_oidc(no_evidence), "evidence_missing"),
    ("empty evidence", on_oidc(evidence(value=b"")), "evidence_missing"),
    ("unknown evidence kind", on_oidc(evidence(kind="password")), "evidence_invalid"),
    ("evidence does not verify", on_oidc(checker_refuses("evidence_invalid")), "evidence_invalid"),
    ("policy version unknown", on_oidc(checker_refuses("policy_version")), "policy_version"),
    ("policy denies", on_oidc(checker_refuses("policy_denied")), "policy_denied"),
    ("another subject", on_oidc(claims(sub="repo:acme/other:ref:main")), "subject_mismatch"),
    ("another audience", on_oidc(claims(aud="billing-api")), "audience_not_granted"),
    ("one scope too many", on_oidc(claims(scope="deploy:read admin")), "scope_not_granted"),
    ("ttl over the grant", on_oidc(decision(max_ttl_seconds=300)), "ttl_not_granted"),
    (
        "past the credential",
        on_oidc(decision(credential_expires_at=NOW + 599)),
        "credential_expiry",
    ),
    ("cnf on an oidc token", on_oidc(claims(cnf=CERTIFICATE_CNF)), "cnf_mismatch"),
    ("cnf absent", on_certificate(drop_claim("cnf")), "cnf_mismatch"),
    ("cnf of another certificate", on_certificate(claims(cnf=OTHER_CNF)), "cnf_mismatch"),
    ("no certificate named", on_certificate(decision(certificate_sha256=None)), "cnf_mismatch"),
    ("repository_id differs", on_oidc(claims(repository_id="654321")), "provenance_mismatch"),
    ("repository_id absent", on_oidc(drop_claim("repository_id")), "provenance_mismatch"),
    ("repository_id a number", on_oidc(claims(repository_id=123456)), "provenance_mismatch"),
    ("spiffe_id differs", on_certificate(claims(spiffe_id=GITHUB_SUBJECT)), "provenance_mismatch"),
    ("an admin claim", on_oidc(claims(admin=True)), "claims_unexpected"),
    ("unvouched provenance", on_oidc(claims(spiffe_id=SPIFFE_SUBJECT)), "claims_unexpected"),
    ("credential over budget", on_oidc(budget_spent), "evidence_budget"),
]

# The checker (identity verification, policy) never runs for a message refused on its own merits.
BEFORE_THE_CHECKER = frozenset(list(RULES)[: list(RULES).index("evidence_missing") + 1])


@pytest.mark.parametrize(
    ("build", "rule"), [row[1:] for row in BROKEN], ids=[row[0] for row in BROKEN]
)
def test_a_message_breaking_one_rule_is_refused_by_that_rule(
    build: Callable[[], Case], rule: str
) -> None:
    case = build()
    checker = FixedChecker(case.outcome)

    with pytest.raises(GuardRefusal) as refused:
        case.guard(checker).check(case.encoded(), case.evidence)

    assert refused.value.rule == rule
    assert f"({rule})" in str(refused.value)
    assert SECRET.decode() not in str(refused.value)
    if rule in BEFORE_THE_CHECKER:
        assert checker.calls == []


def test_every_rule_has_a_breaking_message() -> None:
    # Key endorsements' own rules break in tests/signer/test_endorsement_guard.py.
    assert {rule for _, _, rule in BROKEN} == set(RULES) - set(ENDORSEMENT_RULES)


@pytest.mark.parametrize("build", [oidc_case, certificate_case])
def test_the_unbroken_cases_are_accepted(build: Callable[[], Case]) -> None:
    case = build()
    checker = FixedChecker(case.outcome)

    accepted = case.guard(checker).check(case.encoded(), case.evidence)

    assert accepted == AcceptedToken(
        jti="2f1c9a0e-jti",
        sub=case.claims["sub"],
        aud="deploy-api",
        scopes=("deploy:read", "deploy:write"),
        exp=NOW + 600,
    )
    # The checker decides on the evidence as the gateway sent it, never on what the token claims.
    assert checker.calls == [(case.evidence, NOW)]


INCLUSIVE_LIMITS = {
    "iat and nbf a skew ago": claims(iat=NOW - 60, nbf=NOW - 60),
    "iat and nbf a skew ahead": claims(iat=NOW + 60, nbf=NOW + 60, exp=NOW + 660),
    "the maximum ttl": claims(exp=NOW + 900),
    "one second left": claims(iat=NOW - 60, nbf=NOW - 60, exp=NOW + 1),
    "exactly the granted ttl": decision(max_ttl_seconds=600),
    "exp at the credential's expiry": decision(credential_expires_at=NOW + 600),
    "fewer scopes than granted": claims(scope="deploy:read"),
    "exactly the granted scopes": decision(scopes=frozenset({"deploy:read", "deploy:write"})),
}


@pytest.mark.parametrize("mutation", INCLUSIVE_LIMITS.values(), ids=INCLUSIVE_LIMITS.keys())
def test_limits_are_inclusive(mutation: Mutation) -> None:
    case = oidc_case()
    mutation(case)

    accepted = case.run()  # a refusal raises GuardRefusal

    assert (accepted.sub, accepted.exp) == (case.claims["sub"], case.claims["exp"])


def test_an_empty_scope_asks_for_no_scopes() -> None:
    case = on_oidc(claims(scope=""))()
    checker = FixedChecker(case.outcome)

    accepted = case.guard(checker).check_at(case.encoded(), case.evidence, now=NOW)

    assert accepted.scopes == ()


def test_the_clock_is_read_at_each_check() -> None:
    case = oidc_case()
    instants = iter([NOW, NOW + 3600])
    checker = FixedChecker(case.outcome)
    guard = Guard(limits=LIMITS, evidence_checker=checker, clock=lambda: next(instants))

    guard.check(case.encoded(), case.evidence)
    with pytest.raises(GuardRefusal, match="iat_skew"):
        guard.check(case.encoded(), case.evidence)


def test_a_checker_fault_propagates_and_is_never_an_acceptance() -> None:
    class UnreachableChecker:
        def check(self, evidence: GuardEvidence, now: float) -> EvidenceDecision:
            raise ConnectionError("JWKS unreachable")

    case = oidc_case()
    guard = Guard(limits=LIMITS, evidence_checker=UnreachableChecker(), clock=lambda: NOW)

    with pytest.raises(ConnectionError):
        guard.check(case.encoded(), case.evidence)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
JSON_OBJECTS = st.dictionaries(st.text(max_size=8), JSON, max_size=8)
OUTCOMES = {"accepted", *RULES}


def outcome(message: bytes, case: Case) -> str:
    """ "accepted" or the refusal's rule; any other exception fails the calling test."""
    try:
        case.guard().check(message, case.evidence)
    except GuardRefusal as refusal:
        return refusal.rule
    return "accepted"


@given(st.binary(max_size=512))
def test_any_bytes_are_refused_or_accepted_and_nothing_else(message: bytes) -> None:
    assert outcome(message, oidc_case()) in OUTCOMES


@given(st.lists(st.binary(max_size=64), min_size=1, max_size=3))
def test_any_base64url_segments_are_refused_or_accepted(parts: list[bytes]) -> None:
    message = ".".join(b64url(part) for part in parts).encode()
    assert outcome(message, oidc_case()) in OUTCOMES


@given(JSON_OBJECTS, JSON_OBJECTS)
def test_any_json_objects_are_refused_or_accepted(
    header: dict[str, Any], claims: dict[str, Any]
) -> None:
    assert outcome(signing_input(header, claims), oidc_case()) in OUTCOMES


MEMBERS = sorted(CORE_CLAIMS | {"alg", "kid", "typ", "cnf", "repository_id", "spiffe_id"})


@given(
    st.sampled_from([oidc_case, certificate_case]),
    st.sampled_from(["header", "claims"]),
    st.sampled_from(MEMBERS),
    JSON,
)
def test_any_member_value_is_refused_or_accepted(
    build: Callable[[], Case], part: str, name: str, value: Any
) -> None:
    case = build()
    getattr(case, part)[name] = value
    assert outcome(case.encoded(), case) in OUTCOMES


INSTANTS = st.integers() | st.integers(min_value=NOW - 1000, max_value=NOW + 1000)


@given(INSTANTS, INSTANTS, INSTANTS)
def test_any_instants_are_refused_or_accepted(iat: int, nbf: int, exp: int) -> None:
    case = on_oidc(claims(iat=iat, nbf=nbf, exp=exp))()
    assert outcome(case.encoded(), case) in OUTCOMES


@pytest.mark.parametrize("now", [float("nan"), float("inf")])
def test_a_broken_clock_is_a_fault_not_an_acceptance(now: float) -> None:
    case = oidc_case()
    guard = Guard(limits=LIMITS, evidence_checker=FixedChecker(case.outcome), clock=lambda: now)

    with pytest.raises(ValueError, match="clock"):
        guard.check(case.encoded(), case.evidence)


def test_evidence_mirrors_the_proto_message_and_hides_its_value() -> None:
    message = signer_pb2.Evidence(
        kind="certificate",
        value=SECRET,
        context_extensions={"audience": "deploy-api"},
        **ROUTE,
    )

    evidence = GuardEvidence.from_message(message)

    assert evidence == GuardEvidence(
        kind="certificate",
        value=SECRET,
        context_extensions={"audience": "deploy-api"},
        **ROUTE,
    )
    assert SECRET.decode() not in repr(evidence)
    with pytest.raises(TypeError):
        evidence.context_extensions["audience"] = "billing-api"  # type: ignore[index]


def test_limits_for_a_group_key_use_its_thumbprint() -> None:
    assert LIMITS.kid == header_for(GROUP_KEY)["kid"]
    assert LIMITS.required_claims == CORE_CLAIMS
    assert LIMITS.max_clock_skew_seconds == 60


@pytest.mark.parametrize(
    ("changes", "setting"),
    [
        ({"issuer": ""}, "issuer"),
        ({"kid": ""}, "kid"),
        ({"max_ttl_seconds": 0}, "max_ttl_seconds"),
        ({"max_ttl_seconds": True}, "max_ttl_seconds"),
        ({"max_clock_skew_seconds": -1}, "max_clock_skew_seconds"),
        ({"required_claims": CORE_CLAIMS - {"exp"}}, "required_claims"),
        ({"threshold": 1}, "threshold"),
        ({"min_threshold": 1}, "min_threshold"),
        ({"min_threshold": True}, "min_threshold"),
    ],
)
def test_limits_check_themselves(changes: dict[str, Any], setting: str) -> None:
    with pytest.raises(GuardConfigError) as error:
        replace(LIMITS, **changes)
    assert error.value.setting == setting


def test_a_key_needing_frost_t_or_more_signers_signs_and_one_needing_fewer_is_named() -> None:
    case = oidc_case()
    for threshold in (3, 4):  # at FROST_T, or raised above it
        case.limits = replace(LIMITS, threshold=threshold, min_threshold=3)
        case.guard().check(case.encoded(), case.evidence)
    case.limits = replace(LIMITS, threshold=2, min_threshold=3)
    with pytest.raises(GuardRefusal) as refused:
        case.guard().check(case.encoded(), case.evidence)
    assert (
        refused.value.detail
        == f"key {KID} needs 2 signers, below this signer's minimum FROST_T (3)"
    )


def test_a_required_extra_claim_must_be_present_and_is_then_allowed() -> None:
    limits = replace(LIMITS, required_claims=CORE_CLAIMS | {"client_id"})
    case = oidc_case()
    guard = Guard(limits=limits, evidence_checker=FixedChecker(case.outcome), clock=lambda: NOW)

    with pytest.raises(GuardRefusal, match="claims_missing"):
        guard.check(case.encoded(), case.evidence)
    case.claims["client_id"] = "keymint"
    guard.check(case.encoded(), case.evidence)


@pytest.mark.parametrize(
    "changes",
    [
        {"subject": ""},
        {"max_ttl_seconds": 0},
        {"certificate_sha256": b"short"},
        {"credential_expires_at": 1.5},
        {"provenance": {"sub": "someone"}},
        {"provenance": {"cnf": "x"}},
        {"provenance": {"repository_id": 1.0}},
        {"provenance": {"repository_id": True}},
    ],
)
def test_decisions_check_themselves(changes: dict[str, Any]) -> None:
    case = oidc_case()
    assert isinstance(case.outcome, EvidenceDecision)
    with pytest.raises(ValueError, match=r"EvidenceDecision|provenance"):
        replace(case.outcome, **changes)


def test_a_refusal_names_a_known_rule() -> None:
    with pytest.raises(ValueError, match="unknown guard rule"):
        GuardRefusal("looks_fine", "")

    refusal = GuardRefusal("issuer", "iss is wrong")

    assert (refusal.rule, refusal.detail) == ("issuer", "iss is wrong")
    assert str(refusal) == "guard refused (issuer): iss is wrong"


def test_a_long_claim_value_is_truncated_in_the_refusal() -> None:
    case = on_oidc(claims(iss="https://" + "a" * 5000))()

    with pytest.raises(GuardRefusal) as refused:
        case.run()

    assert refused.value.rule == "issuer"
    assert len(refused.value.detail) < 200
