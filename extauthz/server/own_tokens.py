"""keymint's own tokens presented back to it: a CI job that exchanged at /token calls with the
result. Such a token is passed through unchanged when it is valid for the route, instead of being
mistaken for a foreign OIDC token.

Only our group keys verify it, only EdDSA, with iss, exp, nbf, iat, aud, sub and jti required. A
token bound to a certificate (`cnf.x5t#S256`) passes only with that certificate on the request.
"""

from __future__ import annotations

import hashlib
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from extauthz.identity import IdentityError, Reason
from extauthz.model import Evidence, Grant, Identity, IdentityKind
from extauthz.server.decision import Allow
from extauthz.server.tokencache import MintedToken
from signer.token import ALG, TYP, b64url, kid_for

LEEWAY_SECONDS = 30
REQUIRED = ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]


class OwnTokenVerifier:
    def __init__(
        self,
        *,
        issuer: str,
        group_keys: Callable[[], Sequence[bytes]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._issuer = issuer
        self._group_keys = group_keys
        self._clock = clock

    def key_for(self, token: str) -> bytes | None:
        """Our group key named by the token's header, or None when the token is not ours."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return None
        if header.get("alg") != ALG or header.get("typ") != TYP:
            return None
        kid = header.get("kid")
        return next((k for k in self._group_keys() if kid_for(k) == kid), None)

    def verify(
        self, token: str, key: bytes, audience: str, certificate_sha256: bytes | None
    ) -> Mapping[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                Ed25519PublicKey.from_public_bytes(key),
                algorithms=[ALG],
                audience=audience,
                issuer=self._issuer,
                leeway=LEEWAY_SECONDS,
                options={
                    "require": REQUIRED,
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.InvalidAudienceError:
            raise IdentityError(
                Reason.BAD_AUDIENCE, "this keymint token was minted for another audience"
            ) from None
        except jwt.PyJWTError as exc:
            raise IdentityError(Reason.BAD_SIGNATURE, f"keymint token refused: {exc}") from None
        self._check_times(claims)
        cnf = claims.get("cnf")
        if cnf is not None:
            expected = b64url(certificate_sha256) if certificate_sha256 is not None else None
            if not isinstance(cnf, dict) or cnf.get("x5t#S256") != expected:
                raise IdentityError(
                    Reason.INVALID_CLAIM,
                    "this token is bound to a client certificate the request does not present",
                )
        return claims

    def _check_times(self, claims: Mapping[str, Any]) -> None:
        now = self._clock()
        for name in ("exp", "nbf", "iat"):
            if not isinstance(claims[name], int) or isinstance(claims[name], bool):
                raise IdentityError(Reason.INVALID_CLAIM, f"{name} is not an integer")
        if claims["exp"] <= now - LEEWAY_SECONDS:
            raise IdentityError(Reason.TOKEN_EXPIRED, "the keymint token has expired")
        if claims["nbf"] > now + LEEWAY_SECONDS:
            raise IdentityError(Reason.TOKEN_NOT_YET_VALID, "the keymint token is not yet valid")


def certificate_sha256(url_encoded_pem: str) -> bytes | None:
    if not url_encoded_pem:
        return None
    try:
        certificate = x509.load_pem_x509_certificate(urllib.parse.unquote(url_encoded_pem).encode())
    except ValueError:
        return None
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).digest()


def passthrough(token: str, claims: Mapping[str, Any]) -> Allow:
    """An Allow that forwards one of our own tokens as it is."""
    if "repository_id" in claims:
        kind = IdentityKind.GITHUB_ACTIONS
    elif "spiffe_id" in claims:
        kind = IdentityKind.SPIFFE
    else:
        kind = IdentityKind.X509
    scopes = tuple(str(claims.get("scope", "")).split())
    identity = Identity(
        kind=kind,
        subject=str(claims["sub"]),
        issuer=str(claims["iss"]),
        credential_hash=hashlib.sha256(token.encode()).hexdigest(),
        expires_at=int(claims["exp"]),
        evidence=Evidence("keymint_token", b""),
    )
    grant = Grant(
        str(claims["aud"]), scopes, int(claims["exp"]) - int(claims["iat"]), "keymint-token"
    )
    minted = MintedToken(
        token=token,
        jti=str(claims["jti"]),
        subject=identity.subject,
        audience=grant.audience,
        scopes=scopes,
        issued_at=int(claims["iat"]),
        expires_at=int(claims["exp"]),
        signers=(),
    )
    return Allow(identity, grant, minted, cached=True)
