"""The guard: what a signer agrees to sign, decided by the signer itself.

A signer produces a signature share only for a message its guard accepts, so a compromised gateway
alone cannot obtain a token for an identity it has no evidence for. `Guard.check` applies the rules
in `RULES`, in that order, and raises `GuardRefusal` naming the first one broken:

1. the message is a keymint signing input (`signer.token`) in its canonical encoding, with exactly
   the header `{"alg": "EdDSA", "kid": <our kid>, "typ": "at+jwt"}`, naming a key that needs at
   least the deployment's threshold of signers (FROST_T: a key lowered below it is never used);
2. the claims are present and well typed, issued by our issuer, for no longer than the signer's
   maximum, and minted just now (the gateway mints right before it signs);
3. the subject is not on this signer's own revocation list;
4. the evidence the gateway acted on verifies, and policy, in the version the gateway decided
   under, grants this subject, audience, scopes and lifetime for it on the same request
   (`EvidenceChecker`); certificate callers' tokens are bound to their certificate;
5. no claim is left that neither the limits nor the evidence account for;
6. the credential has not backed more shares than its budget allows in its window.

What the evidence says about the request (host, path, method, context_extensions, headers) is the
gateway's word: no signer can check it. The guard holds the gateway to what policy would grant the
verified caller on the request it names; it cannot tell whether Envoy really sent that request.

Re-verifying identity and running policy is the gateway's code (`extauthz`), written once. This
package never imports it: the signer process is composed with an `EvidenceChecker` at start-up.
There is deliberately no checker here that accepts evidence unseen.

No refusal names the evidence's token or certificate; claim values from the message appear only
quoted and truncated.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Protocol

from signer.endorsement import ENDORSEMENT_RULES
from signer.errors import SignerError
from signer.token import ALG, TYP, TokenFormatError, b64url, kid_for, parse_signing_input
from signer.token import signing_input as encode_signing_input

EVIDENCE_OIDC_TOKEN: Final = "oidc_token"  # noqa: S105 (an evidence kind, not a secret)
EVIDENCE_CERTIFICATE: Final = "certificate"
EVIDENCE_KINDS: Final = frozenset({EVIDENCE_OIDC_TOKEN, EVIDENCE_CERTIFICATE})

CNF_THUMBPRINT: Final = "x5t#S256"  # RFC 8705: base64url SHA-256 of the leaf certificate's DER
HEADER_MEMBERS: Final = frozenset({"alg", "kid", "typ"})
CORE_CLAIMS: Final = frozenset({"iss", "sub", "aud", "scope", "iat", "nbf", "exp", "jti"})

# Every reason a guard refuses, in the order `Guard.check` applies them. The names are stable: they
# reach audit records and metrics labels. `evidence_invalid` and `policy_denied` are for evidence
# checkers to raise; the guard raises the rest.
RULES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "not_a_token": "the message is not a JWT signing input of two JSON objects",
        "not_canonical": "the message is not the canonical encoding of its header and claims",
        "header_alg": "alg is not EdDSA",
        "header_typ": "typ is not at+jwt",
        "header_kid": "kid is not this signer's group key",
        "header_extra": "the header has members besides alg, kid and typ",
        "key_threshold": "the key named needs fewer signers than this signer's minimum (FROST_T)",
        "claims_missing": "a required claim is absent",
        "claims_type": "a claim has the wrong JSON type or form",
        "issuer": "iss is not this gateway's issuer",
        "ttl_not_positive": "exp is not after iat",
        "ttl_exceeded": "exp - iat is over the signer's maximum lifetime",
        "iat_skew": "iat is further from now than the allowed clock skew",
        "nbf_skew": "nbf is further from now than the allowed clock skew",
        "expired": "exp is not after now",
        "subject_revoked": "sub is on this signer's revocation list",
        "evidence_missing": "no evidence came with the message",
        "evidence_invalid": "the evidence does not verify",
        "policy_version": "the request names a policy version this signer does not hold",
        "policy_denied": "policy grants nothing for this evidence and route",
        "subject_mismatch": "sub is not the subject the evidence verifies",
        "audience_not_granted": "policy does not grant aud for this evidence and route",
        "scope_not_granted": "policy does not grant every scope for this evidence and route",
        "ttl_not_granted": "exp - iat is over the lifetime policy grants",
        "credential_expiry": "exp is past the expiry of the credential the evidence carries",
        "cnf_mismatch": "cnf does not bind the token to the evidence's certificate",
        "provenance_mismatch": "a provenance claim differs from what the evidence verifies",
        "claims_unexpected": "a claim neither the limits nor the evidence account for",
        "evidence_budget": "the credential has backed as many shares as its budget allows",
        # Key endorsements (typ keymint-key-endorsement+jwt) share the format, header, issuer and
        # iat rules above; their own rules are in signer.endorsement, checked by
        # signer.endorsement_guard.
        **ENDORSEMENT_RULES,
    }
)

# RFC 6749 section 3.3: scope = scope-token *( SP scope-token ); empty means no scopes.
_SCOPE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+(?: [\x21\x23-\x5b\x5d-\x7e]+)*")
_SHOWN_CHARS = 64


class GuardRefusal(SignerError):
    """The guard will not sign this message; `rule` (a key of `RULES`) says why."""

    def __init__(self, rule: str, detail: str) -> None:
        if rule not in RULES:
            raise ValueError(f"unknown guard rule {rule!r}")
        self.rule = rule
        self.detail = detail
        super().__init__(f"guard refused ({rule}): {detail}")


class GuardConfigError(SignerError):
    """A guard limit is missing or invalid; `setting` names it."""

    def __init__(self, setting: str, problem: str) -> None:
        self.setting = setting
        self.problem = problem
        super().__init__(f"{setting}: {problem}")


@dataclass(frozen=True, slots=True)
class GuardLimits:
    """What this signer signs at most, whatever the evidence: fixed at start-up.

    `threshold` is how many signers the key `kid` needs; `min_threshold` the deployment's (FROST_T).
    Both default to FROST's minimum, 2, under which no key can be made.
    """

    issuer: str
    kid: str
    max_ttl_seconds: int
    max_clock_skew_seconds: int = 60
    required_claims: frozenset[str] = CORE_CLAIMS
    threshold: int = 2
    min_threshold: int = 2

    def __post_init__(self) -> None:
        if not self.issuer:
            raise GuardConfigError("issuer", "must not be empty")
        if not self.kid:
            raise GuardConfigError("kid", "must not be empty")
        if not _is_int(self.max_ttl_seconds) or self.max_ttl_seconds <= 0:
            raise GuardConfigError("max_ttl_seconds", "must be a positive integer")
        if not _is_int(self.max_clock_skew_seconds) or self.max_clock_skew_seconds < 0:
            raise GuardConfigError("max_clock_skew_seconds", "must be a non-negative integer")
        object.__setattr__(self, "required_claims", frozenset(self.required_claims))
        if missing := CORE_CLAIMS - self.required_claims:
            raise GuardConfigError("required_claims", f"must include {sorted(missing)}")
        for name in ("threshold", "min_threshold"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 2:
                raise GuardConfigError(name, "must be an integer of at least 2 (FROST's minimum)")

    @classmethod
    def for_group_key(
        cls,
        group_public_key: bytes,
        *,
        issuer: str,
        max_ttl_seconds: int,
        max_clock_skew_seconds: int = 60,
        threshold: int = 2,
        min_threshold: int = 2,
    ) -> GuardLimits:
        """Limits for tokens signed by `group_public_key`, whose kid is its RFC 7638 thumbprint."""
        return cls(
            issuer=issuer,
            kid=kid_for(group_public_key),
            max_ttl_seconds=max_ttl_seconds,
            max_clock_skew_seconds=max_clock_skew_seconds,
            threshold=threshold,
            min_threshold=min_threshold,
        )


class EvidenceMessage(Protocol):
    """The shape of `signer_pb2.Evidence`, so this module needs no protobuf import."""

    @property
    def kind(self) -> str: ...
    @property
    def value(self) -> bytes: ...
    @property
    def host(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def method(self) -> str: ...
    @property
    def context_extensions(self) -> Mapping[str, str]: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def policy_sha256(self) -> str: ...
    @property
    def requested_audience(self) -> str: ...
    @property
    def requested_scopes(self) -> Sequence[str]: ...
    @property
    def requested_ttl_seconds(self) -> int: ...
    @property
    def request_attributes(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class GuardEvidence:
    """What the gateway acted on: the caller's credential, the request Envoy described, what was
    asked for, and the policy version the gateway decided under.

    `kind` is "oidc_token" (value: the compact JWT) or "certificate" (value: the PEM chain, leaf
    first). The value is a credential: it is kept out of repr and out of every refusal. `headers`
    are the request headers policy may read (credentials only where the operator lets a policy read
    them). `requested_*` are what the caller asked for explicitly (RFC 8693 `/token`); empty when
    the route decides. `request_attributes` is the rest of what policy reads of the request (the
    gateway's JSON, opaque here: the checker reads it); it may hold a body, so it stays out of repr.
    """

    kind: str
    value: bytes = field(repr=False)
    host: str = ""
    path: str = ""
    method: str = ""
    context_extensions: Mapping[str, str] = field(default_factory=dict, hash=False)
    headers: Mapping[str, str] = field(default_factory=dict, hash=False, repr=False)
    policy_sha256: str = ""
    requested_audience: str = ""
    requested_scopes: tuple[str, ...] = ()
    requested_ttl_seconds: int = 0
    request_attributes: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        # Read-only copies: the checker must not be able to change what the guard saw.
        for name in ("context_extensions", "headers"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))
        object.__setattr__(self, "requested_scopes", tuple(self.requested_scopes))

    @classmethod
    def from_message(cls, message: EvidenceMessage) -> GuardEvidence:
        return cls(
            kind=message.kind,
            value=bytes(message.value),
            host=message.host,
            path=message.path,
            method=message.method,
            context_extensions=dict(message.context_extensions),
            headers=dict(message.headers),
            policy_sha256=message.policy_sha256,
            requested_audience=message.requested_audience,
            requested_scopes=tuple(message.requested_scopes),
            requested_ttl_seconds=message.requested_ttl_seconds,
            request_attributes=bytes(message.request_attributes),
        )


ProvenanceValue = str | int


@dataclass(frozen=True, slots=True)
class EvidenceDecision:
    """What an `EvidenceChecker` verified and what policy grants for it on this route.

    `certificate_sha256` (the leaf's DER SHA-256) is required for certificate evidence: the token's
    `cnf.x5t#S256` must bind it. `credential_expires_at` is the presented credential's own expiry
    (unix seconds), past which no token may live. Each `provenance` entry must appear in the token
    as a claim with the same value and JSON type (e.g. `repository_id`, `spiffe_id`).
    `credential_id` names the credential for its budget however it was encoded (e.g. the leaf's
    DER SHA-256, or the SHA-256 of a JWT's decoded payload); without it the budget is kept per
    evidence value.
    """

    subject: str
    audiences: frozenset[str]
    scopes: frozenset[str]
    max_ttl_seconds: int
    certificate_sha256: bytes | None = None
    credential_expires_at: int | None = None
    provenance: Mapping[str, ProvenanceValue] = field(default_factory=dict, hash=False)
    credential_id: bytes | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.subject, str) or not self.subject:
            raise ValueError("EvidenceDecision.subject must be a non-empty string")
        object.__setattr__(self, "audiences", frozenset(self.audiences))
        object.__setattr__(self, "scopes", frozenset(self.scopes))
        if not _is_int(self.max_ttl_seconds) or self.max_ttl_seconds <= 0:
            raise ValueError("EvidenceDecision.max_ttl_seconds must be a positive integer")
        if self.certificate_sha256 is not None and len(self.certificate_sha256) != 32:
            raise ValueError("EvidenceDecision.certificate_sha256 must be 32 bytes")
        if self.credential_expires_at is not None and not _is_int(self.credential_expires_at):
            raise ValueError("EvidenceDecision.credential_expires_at must be an integer")
        for name, value in self.provenance.items():
            # Registered claims have rules of their own; provenance only adds claims.
            if name in CORE_CLAIMS or name == "cnf":
                raise ValueError(f"provenance claim {name!r} is a registered claim")
            if not (isinstance(value, str) or _is_int(value)):
                raise ValueError(f"provenance claim {name!r} must be a string or an integer")
        object.__setattr__(self, "provenance", MappingProxyType(dict(self.provenance)))


class EvidenceChecker(Protocol):
    """Re-verifies the evidence and re-runs policy on the request it describes.

    Implemented by the gateway package and composed into the signer process at start-up. It
    evaluates the policy version the evidence names (`policy_version` if it holds no such version)
    on the request, headers and explicit audience/scopes/lifetime the evidence carries, exactly as
    the gateway did. Raises `GuardRefusal` (usually `evidence_invalid`, `policy_version` or
    `policy_denied`) to refuse; any other exception is a fault, which the signer service must treat
    as a refusal too.
    """

    def check(
        self, evidence: GuardEvidence, now: float
    ) -> EvidenceDecision | Awaitable[EvidenceDecision]: ...


class RevocationList(Protocol):
    def subject_revoked(self, subject: str) -> bool: ...


class SpendingBudget(Protocol):
    def spend(self, credential: bytes, now: float | None = None) -> bool: ...


@dataclass(frozen=True, slots=True)
class AcceptedToken:
    """What the guard agreed to sign, for the audit record."""

    jti: str
    sub: str
    aud: str
    scopes: tuple[str, ...]
    exp: int


@dataclass(frozen=True, slots=True)
class _Claims:
    """The registered claims of a message, after the type rules."""

    iss: str
    sub: str
    aud: str
    scopes: tuple[str, ...]
    iat: int
    nbf: int
    exp: int
    jti: str
    cnf_thumbprint: str | None


class Guard:
    """Decides, for this signer, whether a message may be signed; see the module docstring."""

    def __init__(
        self,
        *,
        limits: GuardLimits,
        evidence_checker: EvidenceChecker,
        revocations: RevocationList | None = None,
        budget: SpendingBudget | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._limits = limits
        self._checker = evidence_checker
        self._revocations = revocations
        self._budget = budget
        self._clock = clock

    @property
    def limits(self) -> GuardLimits:
        return self._limits

    def check(self, message: bytes, evidence: GuardEvidence | None) -> AcceptedToken:
        """Accept `message` for signing now, or raise `GuardRefusal` naming the rule it breaks."""
        return self.check_at(message, evidence, now=self._clock())

    def check_at(
        self, message: bytes, evidence: GuardEvidence | None, *, now: float
    ) -> AcceptedToken:
        """`check` as of the instant `now` (unix seconds)."""
        claims, raw_claims, present = self._before_evidence(message, evidence, now)
        decision = self._checker.check(present, now)
        if inspect.isawaitable(decision):
            raise TypeError("this evidence checker is asynchronous: use check_async")
        return self._after_evidence(claims, raw_claims, present, decision, now)

    async def check_async(self, message: bytes, evidence: GuardEvidence | None) -> AcceptedToken:
        """`check` for evidence checkers whose `check` is a coroutine (they may fetch keys)."""
        now = self._clock()
        claims, raw_claims, present = self._before_evidence(message, evidence, now)
        decision = self._checker.check(present, now)
        if inspect.isawaitable(decision):
            decision = await decision
        return self._after_evidence(claims, raw_claims, present, decision, now)

    def _before_evidence(
        self, message: bytes, evidence: GuardEvidence | None, now: float
    ) -> tuple[_Claims, Mapping[str, Any], GuardEvidence]:
        if not math.isfinite(now):
            # NaN compares false with everything, which would switch every time rule off.
            raise ValueError(f"the guard's clock gave {now!r}")
        header, raw_claims = _parse(message)
        _check_header(header, self._limits.kid)
        check_key_threshold(self._limits.kid, self._limits.threshold, self._limits.min_threshold)
        claims = _typed_claims(raw_claims, self._limits.required_claims)
        self._check_lifetime(claims, now)
        if self._revocations is not None and self._revocations.subject_revoked(claims.sub):
            raise GuardRefusal("subject_revoked", f"sub {_show(claims.sub)} is revoked here")
        return claims, raw_claims, _present(evidence)

    def _after_evidence(
        self,
        claims: _Claims,
        raw_claims: Mapping[str, Any],
        evidence: GuardEvidence,
        decision: EvidenceDecision,
        now: float,
    ) -> AcceptedToken:
        _check_grant(claims, decision)
        _check_binding(claims, raw_claims, evidence, decision)
        allowed = self._limits.required_claims | {"cnf"} | set(decision.provenance)
        if unexpected := sorted(raw_claims.keys() - allowed):
            raise GuardRefusal(
                "claims_unexpected", f"claims {_show(unexpected)} are not vouched for"
            )
        # Last, so only a share the guard would otherwise give counts against the credential.
        credential = decision.credential_id or hashlib.sha256(evidence.value).digest()
        if self._budget is not None and not self._budget.spend(credential, now):
            raise GuardRefusal(
                "evidence_budget", "this credential has backed as many tokens as it may for now"
            )
        return AcceptedToken(claims.jti, claims.sub, claims.aud, claims.scopes, claims.exp)

    def _check_lifetime(self, claims: _Claims, now: float) -> None:
        limits = self._limits
        if claims.iss != limits.issuer:
            raise GuardRefusal("issuer", f"iss {_show(claims.iss)} is not {_show(limits.issuer)}")
        ttl = claims.exp - claims.iat
        if ttl <= 0:
            raise GuardRefusal("ttl_not_positive", f"exp - iat is {ttl} s")
        if ttl > limits.max_ttl_seconds:
            raise GuardRefusal(
                "ttl_exceeded", f"exp - iat is {ttl} s, over {limits.max_ttl_seconds}"
            )
        # Compared, never subtracted from the float `now`: a JSON integer past float range must be
        # a refusal, not an OverflowError.
        skew = limits.max_clock_skew_seconds
        for rule, name, instant in (
            ("iat_skew", "iat", claims.iat),
            ("nbf_skew", "nbf", claims.nbf),
        ):
            if instant > now + skew:
                raise GuardRefusal(rule, f"{name} is more than {skew} s ahead of now")
            if instant < now - skew:
                raise GuardRefusal(rule, f"{name} is more than {skew} s before now")
        if claims.exp <= now:
            raise GuardRefusal("expired", "exp is not after now")


def _parse(message: bytes) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    try:
        token = parse_signing_input(message)
        canonical = encode_signing_input(token.header, token.claims)
    except TokenFormatError as error:
        raise GuardRefusal("not_a_token", error.reason) from None
    except RecursionError:
        raise GuardRefusal("not_a_token", "JSON nested too deeply") from None
    # What was checked must be exactly what is signed: a verifier that parses duplicate members,
    # whitespace or odd escapes differently from Python's json must not see another token.
    if message != canonical:
        raise GuardRefusal("not_canonical", "not the canonical encoding of its header and claims")
    return token.header, token.claims


def _check_header(header: Mapping[str, Any], kid: str) -> None:
    if header.get("alg") != ALG:
        raise GuardRefusal("header_alg", f"alg is {_show(header.get('alg'))}, not {ALG}")
    if header.get("typ") != TYP:
        raise GuardRefusal("header_typ", f"typ is {_show(header.get('typ'))}, not {TYP}")
    if header.get("kid") != kid:
        raise GuardRefusal("header_kid", f"kid {_show(header.get('kid'))} is not this group key")
    # jku, x5u, jwk, crit and the rest would let a verifier pick a key or semantics we never chose.
    if extra := sorted(header.keys() - HEADER_MEMBERS):
        raise GuardRefusal("header_extra", f"header members {_show(extra)} are not allowed")


def check_key_threshold(kid: str, threshold: int, min_threshold: int) -> None:
    """Refuse to sign with a key fewer than the deployment's threshold of signers could use.

    A reshare keeps the group key, which every verifier trusts, so a key lowered below FROST_T
    (before this rule existed, or installed otherwise) would let fewer signers mint tokens that
    verify everywhere; its shares stay held, and unused, until a ceremony raises or drops it.
    """
    if threshold < min_threshold:
        raise GuardRefusal(
            "key_threshold",
            f"key {kid} needs {threshold} signers, below this signer's minimum FROST_T "
            f"({min_threshold})",
        )


def _typed_claims(claims: Mapping[str, Any], required: frozenset[str]) -> _Claims:
    if missing := sorted(required - claims.keys()):
        raise GuardRefusal("claims_missing", f"claims {missing} are missing")
    for name in ("iss", "sub", "aud", "jti"):
        if not isinstance(claims[name], str) or not claims[name]:
            raise GuardRefusal("claims_type", f"{name} must be a non-empty string")
    for name in ("iat", "nbf", "exp"):
        if not _is_int(claims[name]):
            raise GuardRefusal("claims_type", f"{name} must be an integer number of seconds")
    scope = claims["scope"]
    if not isinstance(scope, str) or (scope and not _SCOPE.fullmatch(scope)):
        raise GuardRefusal("claims_type", "scope must be scope tokens separated by single spaces")
    return _Claims(
        iss=claims["iss"],
        sub=claims["sub"],
        aud=claims["aud"],
        scopes=tuple(scope.split(" ")) if scope else (),
        iat=claims["iat"],
        nbf=claims["nbf"],
        exp=claims["exp"],
        jti=claims["jti"],
        cnf_thumbprint=_cnf_thumbprint(claims),
    )


def _cnf_thumbprint(claims: Mapping[str, Any]) -> str | None:
    if "cnf" not in claims:
        return None
    cnf = claims["cnf"]
    if not isinstance(cnf, dict) or cnf.keys() != {CNF_THUMBPRINT}:
        raise GuardRefusal("claims_type", f"cnf must be an object with only {CNF_THUMBPRINT}")
    thumbprint = cnf[CNF_THUMBPRINT]
    if not isinstance(thumbprint, str):
        raise GuardRefusal("claims_type", f"cnf.{CNF_THUMBPRINT} must be a string")
    return thumbprint


def _present(evidence: GuardEvidence | None) -> GuardEvidence:
    if evidence is None or not evidence.value:
        raise GuardRefusal("evidence_missing", "the gateway sent no evidence for this message")
    if evidence.kind not in EVIDENCE_KINDS:
        raise GuardRefusal("evidence_invalid", f"unknown evidence kind {_show(evidence.kind)}")
    return evidence


def _check_grant(claims: _Claims, decision: EvidenceDecision) -> None:
    if claims.sub != decision.subject:
        raise GuardRefusal(
            "subject_mismatch",
            f"sub {_show(claims.sub)} is not the verified subject {_show(decision.subject)}",
        )
    if claims.aud not in decision.audiences:
        raise GuardRefusal("audience_not_granted", f"aud {_show(claims.aud)} is not granted")
    if ungranted := sorted(set(claims.scopes) - decision.scopes):
        raise GuardRefusal("scope_not_granted", f"scopes {_show(ungranted)} are not granted")
    ttl = claims.exp - claims.iat
    if ttl > decision.max_ttl_seconds:
        raise GuardRefusal(
            "ttl_not_granted", f"exp - iat is {ttl} s, policy grants {decision.max_ttl_seconds}"
        )
    expires_at = decision.credential_expires_at
    if expires_at is not None and claims.exp > expires_at:
        raise GuardRefusal(
            "credential_expiry", f"exp is {claims.exp - expires_at} s past the credential's expiry"
        )


def _check_binding(
    claims: _Claims,
    raw_claims: Mapping[str, Any],
    evidence: GuardEvidence,
    decision: EvidenceDecision,
) -> None:
    expected = None if decision.certificate_sha256 is None else b64url(decision.certificate_sha256)
    if evidence.kind == EVIDENCE_CERTIFICATE and expected is None:
        # Fail closed on a checker that verified a certificate but did not say which one.
        raise GuardRefusal("cnf_mismatch", "the evidence checker named no certificate to bind")
    if claims.cnf_thumbprint != expected:
        raise GuardRefusal(
            "cnf_mismatch",
            f"cnf.{CNF_THUMBPRINT} is {_show(claims.cnf_thumbprint)}, expected {_show(expected)}",
        )
    for name, value in sorted(decision.provenance.items()):
        actual = raw_claims.get(name)
        # Strict JSON type too: "42" and 42 are different claims to a verifier's policy.
        if type(actual) is not type(value) or actual != value:
            raise GuardRefusal(
                "provenance_mismatch", f"{name} is {_show(actual)}, verified {_show(value)}"
            )


def _is_int(value: object) -> bool:
    return type(value) is int  # JSON numbers only: bool is an int subclass, and so are enums


def _show(value: object) -> str:
    """A claim value for a refusal: quoted, and short however long the message made it."""
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else f"{text[: _SHOWN_CHARS - 3]}..."
