"""Errors of the identity layer.

Two kinds, as in h11: `IdentityError` says the caller's credential was refused (the edge answers
401 and logs `reason`); `IdentityConfigError` says the operator's configuration is unsafe or
invalid (raised at construction, never per request).

Messages are safe to log: they never contain a token, a certificate or a key. A token is
referred to by `token_reference(token)`, the first 12 hex characters of its SHA-256.
"""

# ruff: noqa: S105  (reason names such as "token_expired" are not passwords)

from __future__ import annotations

import hashlib
from enum import StrEnum

import jwt

from extauthz.errors import ExtAuthzError


class Reason(StrEnum):
    """Why a credential was refused: short, stable, snake_case; for logs, metrics and tests."""

    MISSING_CREDENTIAL = "missing_credential"
    # JWT structure and header
    MALFORMED_TOKEN = "malformed_token"
    TOKEN_TOO_LARGE = "token_too_large"
    ALG_NOT_ALLOWED = "alg_not_allowed"
    BAD_TOKEN_TYPE = "bad_token_type"
    CRIT_NOT_SUPPORTED = "crit_not_supported"
    MISSING_KID = "missing_kid"
    # JWT keys and signature
    UNKNOWN_ISSUER = "unknown_issuer"
    UNKNOWN_KID = "unknown_kid"
    BAD_SIGNATURE = "bad_signature"
    ISSUER_UNREACHABLE = "issuer_unreachable"
    # JWT claims
    BAD_AUDIENCE = "bad_audience"
    TOKEN_EXPIRED = "token_expired"
    TOKEN_NOT_YET_VALID = "token_not_yet_valid"
    IAT_IN_FUTURE = "iat_in_future"
    TOKEN_TOO_OLD = "token_too_old"
    TOKEN_LIFETIME_TOO_LONG = "token_lifetime_too_long"
    MISSING_CLAIM = "missing_claim"
    INVALID_CLAIM = "invalid_claim"
    # Certificates and SPIFFE
    MALFORMED_CERTIFICATE = "malformed_certificate"
    CERT_EXPIRED = "cert_expired"
    CERT_NOT_YET_VALID = "cert_not_yet_valid"
    CHAIN_UNTRUSTED = "chain_untrusted"
    NOT_AN_SVID = "not_an_svid"
    MALFORMED_SPIFFE_ID = "malformed_spiffe_id"
    WRONG_TRUST_DOMAIN = "wrong_trust_domain"
    # Proxies
    MALFORMED_XFCC = "malformed_xfcc"
    UNTRUSTED_PROXY = "untrusted_proxy"
    XFCC_MISMATCH = "xfcc_mismatch"
    # A name without the certificate it came from: signers have nothing to verify.
    CERTIFICATE_NOT_FORWARDED = "certificate_not_forwarded"


class IdentityError(ExtAuthzError):
    """A presented credential was refused: `reason` for machines, the message for humans."""

    def __init__(self, reason: Reason, message: str) -> None:
        self.reason = reason
        self.message = message
        super().__init__(f"{reason}: {message}")


class MissingCredential(IdentityError):
    """No credential at all was presented (the edge answers 401 without an `error=` parameter)."""

    def __init__(self, message: str = "no credential presented") -> None:
        super().__init__(Reason.MISSING_CREDENTIAL, message)


class IdentityConfigError(ExtAuthzError):
    """The identity layer was configured in a way that is invalid or unsafe (operator's bug)."""


def token_reference(token: str | bytes) -> str:
    """How a token may appear in a message or log line: the first 12 hex chars of its SHA-256."""
    data = token.encode("utf-8", "surrogatepass") if isinstance(token, str) else token
    return hashlib.sha256(data).hexdigest()[:12]


# PyJWT's exceptions, most specific first, and the reason each one means.
_PYJWT_REASONS: tuple[tuple[type[jwt.PyJWTError], Reason], ...] = (
    (jwt.InvalidSignatureError, Reason.BAD_SIGNATURE),
    (jwt.DecodeError, Reason.MALFORMED_TOKEN),
    (jwt.ExpiredSignatureError, Reason.TOKEN_EXPIRED),
    (jwt.ImmatureSignatureError, Reason.TOKEN_NOT_YET_VALID),
    (jwt.InvalidAudienceError, Reason.BAD_AUDIENCE),
    (jwt.InvalidIssuerError, Reason.UNKNOWN_ISSUER),
    (jwt.MissingRequiredClaimError, Reason.MISSING_CLAIM),
    (jwt.InvalidAlgorithmError, Reason.ALG_NOT_ALLOWED),
    (jwt.InvalidKeyError, Reason.BAD_SIGNATURE),
)


def from_pyjwt(error: jwt.PyJWTError) -> IdentityError:
    """PyJWT's refusal as ours: its reason, and its message cut short (it names no secret)."""
    reason = next((r for t, r in _PYJWT_REASONS if isinstance(error, t)), Reason.INVALID_CLAIM)
    return IdentityError(reason, str(error)[:200])
