"""Verification keys: which JWK may verify which algorithm, and keys read from a JWKS file.

An issuer accepts some of RS256, PS256, ES256, ES384 and EdDSA (never `none`, never HMAC). A JWK
is a verification key for an algorithm only if its type and curve fit it (RSA of 2048 bits or
more: RS256 and PS256; EC P-256: ES256; EC P-384: ES384; OKP Ed25519: EdDSA), its own `alg`, when
given, names that algorithm, its `use` is one the issuer's tokens are signed under, and it is a
public key. A token's `alg` must be one its key may verify: an RSA key never checks an ES256
signature, whatever the header says.

`JwksFile` serves keys from a file (a cluster's `/openid/v1/jwks`, a SPIFFE trust bundle): read
at start (a file without a usable key stops the start), read again for an unknown `kid` when the
file has changed, at most once per cooldown, keeping the last good keys if the new file is bad.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ec import (
    SECP256R1,
    SECP384R1,
    EllipticCurvePublicKey,
)
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt import PyJWK, PyJWTError

from extauthz.identity.errors import IdentityConfigError, IdentityError, Reason

log = logging.getLogger(__name__)

ALLOWED_ALGORITHMS = ("RS256", "PS256", "ES256", "ES384", "EdDSA")
MIN_RSA_BITS = 2048
USE_SIGNATURE = "sig"
USE_JWT_SVID = "jwt-svid"  # a SPIFFE trust bundle's keys for JWT-SVIDs

PublicKey = RSAPublicKey | EllipticCurvePublicKey | Ed25519PublicKey
Clock = Callable[[], float]

_BY_TYPE: Mapping[tuple[str, str | None], frozenset[str]] = {
    ("RSA", None): frozenset({"RS256", "PS256"}),
    ("EC", "P-256"): frozenset({"ES256"}),
    ("EC", "P-384"): frozenset({"ES384"}),
    ("OKP", "Ed25519"): frozenset({"EdDSA"}),
}


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A public key, its `kid`, and the algorithms it may verify for this issuer."""

    kid: str
    key: PublicKey
    algorithms: frozenset[str]


class KeySource(Protocol):
    """Where one issuer's keys come from: `JwksCache` (discovery or a JWKS URL) or `JwksFile`."""

    @property
    def issuer(self) -> str: ...

    async def verification_key(self, kid: str) -> VerificationKey: ...


def jwk_algorithms(jwk: Mapping[str, Any]) -> frozenset[str]:
    """The algorithms a JWK's type, curve and `alg` allow (empty for anything else)."""
    kty = jwk.get("kty")
    crv = None if kty == "RSA" else jwk.get("crv")
    if not isinstance(kty, str) or not (crv is None or isinstance(crv, str)):
        return frozenset()
    fitting = _BY_TYPE.get((kty, crv), frozenset())
    if "alg" in jwk:
        return fitting & {jwk["alg"]} if isinstance(jwk["alg"], str) else frozenset()
    return fitting


def is_signing_key(
    jwk: Mapping[str, Any], algorithms: Collection[str], uses: Collection[str] = (USE_SIGNATURE,)
) -> bool:
    """A public key with a `kid`, for signatures, that may verify one of `algorithms`."""
    key_ops = jwk.get("key_ops")
    return (
        jwk.get("use", USE_SIGNATURE) in uses
        and (key_ops is None or (isinstance(key_ops, list) and "verify" in key_ops))
        and isinstance(jwk.get("kid"), str)
        and bool(jwk["kid"])
        and "d" not in jwk  # a private key published by mistake is not a verification key
        and bool(jwk_algorithms(jwk) & set(algorithms))
    )


def is_rs256_signing_key(jwk: Mapping[str, Any]) -> bool:
    """A public RSA key declared (or not declared otherwise) for RS256 signatures."""
    return is_signing_key(jwk, ("RS256",))


def verification_key(jwk: Mapping[str, Any], algorithms: Collection[str]) -> VerificationKey | None:
    """The JWK as a key for the `algorithms` it may verify, or None if it is not usable."""
    usable = jwk_algorithms(jwk) & set(algorithms)
    if not usable:
        return None
    try:
        key = PyJWK(dict(jwk), algorithm=min(usable)).key
    except (PyJWTError, ValueError, TypeError):
        return None
    kid = str(jwk["kid"])
    if isinstance(key, RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            return None
        return VerificationKey(kid, key, frozenset(usable))
    if isinstance(key, EllipticCurvePublicKey):
        curve = SECP256R1 if "ES256" in usable else SECP384R1
        return (
            VerificationKey(kid, key, frozenset(usable)) if isinstance(key.curve, curve) else None
        )
    if isinstance(key, Ed25519PublicKey):
        return VerificationKey(kid, key, frozenset(usable))
    return None


def accepted_jwks(
    document: object,
    algorithms: Collection[str],
    uses: Collection[str],
    max_keys: int,
) -> list[dict[str, Any]]:
    """The usable JWKs of a JWKS document, in its order; ValueError says why there are none."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("JWKS has no keys array")
    candidates = [
        k for k in document["keys"] if isinstance(k, dict) and is_signing_key(k, algorithms, uses)
    ]
    kids = [k["kid"] for k in candidates]
    # A kid named twice is ambiguous: which key would a token mean? Use neither.
    accepted = [
        k
        for k in candidates
        if kids.count(k["kid"]) == 1 and verification_key(k, algorithms) is not None
    ]
    if not accepted:
        raise ValueError(f"JWKS has no usable {'/'.join(sorted(algorithms))} key")
    return accepted[:max_keys]


def parse_jwks(
    jwks: Iterable[object], algorithms: Collection[str], uses: Collection[str]
) -> dict[str, VerificationKey]:
    """Accepted JWKs (as stored) to keys by kid; anything unusable is skipped."""
    parsed: dict[str, VerificationKey] = {}
    for jwk in jwks:
        if isinstance(jwk, dict) and is_signing_key(jwk, algorithms, uses):
            key = verification_key(jwk, algorithms)
            if key is not None:
                parsed[key.kid] = key
    return parsed


class JwksFile:
    """An issuer's keys from a JWKS file on disk (see the module docstring)."""

    def __init__(
        self,
        issuer: str,
        path: str | os.PathLike[str],
        *,
        algorithms: Collection[str],
        uses: Collection[str] = (USE_SIGNATURE,),
        cooldown_seconds: float = 60.0,
        max_document_bytes: int = 64 * 1024,
        max_keys: int = 32,
        clock: Clock = time.time,
    ) -> None:
        self.issuer = issuer
        self._path = Path(path)
        self._algorithms = frozenset(algorithms)
        self._uses = frozenset(uses)
        self._cooldown = cooldown_seconds
        self._max_bytes = max_document_bytes
        self._max_keys = max_keys
        self._clock = clock
        try:
            self._stamp, self._keys = self._read()
        except (OSError, ValueError, RecursionError) as exc:
            raise IdentityConfigError(f"JWKS file {self._path}: {_problem(exc)}") from None
        self._last_read = clock()

    @property
    def path(self) -> Path:
        return self._path

    async def verification_key(self, kid: str) -> VerificationKey:
        key = self._keys.get(kid)
        if key is None and self._clock() - self._last_read >= self._cooldown:
            self._reload()
            key = self._keys.get(kid)
        if key is None:
            raise IdentityError(
                Reason.UNKNOWN_KID, f"kid {kid[:64]!r} is not in {self._path.name} ({self.issuer})"
            )
        return key

    def _reload(self) -> None:
        self._last_read = self._clock()
        try:
            if _stamp(self._path) == self._stamp:
                return
            self._stamp, self._keys = self._read()
            log.info("re-read the JWKS file of %s: %d key(s)", self.issuer, len(self._keys))
        except (OSError, ValueError, RecursionError) as exc:
            log.warning(
                "JWKS file %s of %s unusable (%s); keeping its last keys",
                self._path,
                self.issuer,
                _problem(exc),
            )

    def _read(self) -> tuple[tuple[int, int, int], dict[str, VerificationKey]]:
        stamp = _stamp(self._path)
        with self._path.open("rb") as handle:
            content = handle.read(self._max_bytes + 1)
        if len(content) > self._max_bytes:
            raise ValueError(f"larger than {self._max_bytes} bytes")
        document = json.loads(content)
        jwks = accepted_jwks(document, self._algorithms, self._uses, self._max_keys)
        return stamp, parse_jwks(jwks, self._algorithms, self._uses)


def _stamp(path: Path) -> tuple[int, int, int]:
    status = path.stat()
    return status.st_ino, status.st_mtime_ns, status.st_size


def _problem(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return str(exc)[:200] or type(exc).__name__
