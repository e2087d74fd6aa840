"""`extauthz verify`: check a keymint token offline, as an upstream API would.

    extauthz verify --trust-root root.json \\
        --endorsements https://keymint.example/.well-known/keymint-endorsements.json \\
        --issuer https://keymint.example --audience https://api.internal "$TOKEN"
    echo "$TOKEN" | extauthz verify --trust-root root.json --endorsements-file e.json \\
        --issuer ... --audience ... -

Which keys: with `--trust-root`, only keys that t signers endorsed in a chain from the root that
operators pinned (`extauthz.tools.pinned_keys`); a JWKS given as well (`--jwks` / `--jwks-file`) can
only narrow them. Without a trust root the command refuses to run unless told
`--trust-served-keys`: then it trusts every key in the JWKS, that is, whoever serves it (the
gateway, or anyone between it and you) can make any token verify.

Checks, in order: size and shape (three base64url parts of strict JSON, no repeated members);
header (`alg` exactly EdDSA, `typ` at+jwt per RFC 9068, no `crit`, a `kid`); the key named by
`kid` in the given JWKS (OKP Ed25519 keys only); the signature, `iss` and `aud` (PyJWT, with the
algorithm allow-list `ALGORITHMS`); the required claims `REQUIRED_CLAIMS`; then exp/nbf/iat
against the clock, with `leeway` seconds of skew either way.

Keys come only from those sources: `jku`, `x5u`, `jwk` and `x5c` in a token header are never
read, so a token carrying its own key verifies only if a trusted key is that key.

A refusal is an `IdentityError` with the same reason codes the gateway uses (`bad_signature`,
`unknown_kid` also for a key the chain does not endorse, `token_expired`...); the command prints
it and exits 1. A JWKS or endorsement chain that cannot be read, fetched or verified is a
`KeySetError`: the command could not decide, and exits 2.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import math
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp
import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from extauthz.errors import ExtAuthzError
from extauthz.identity._http import FetchError, fetch_json
from extauthz.identity._jws import json_segment, numeric_date
from extauthz.identity.errors import IdentityError, Reason, from_pyjwt

ALGORITHMS: Final = ("EdDSA",)
REQUIRED_CLAIMS: Final = ("exp", "iat", "nbf", "iss", "aud", "sub", "jti")
ACCEPTED_TYPES: Final = frozenset({"at+jwt", "application/at+jwt"})  # RFC 9068 section 4
MAX_TOKEN_BYTES = 16 * 1024
MAX_JWKS_BYTES = 256 * 1024
MAX_KID_LENGTH = 256
MAX_NUMERIC_DATE = 2**40
DEFAULT_LEEWAY_SECONDS = 30.0
DEFAULT_FETCH_TIMEOUT_SECONDS = 10.0

_B64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


class KeySetError(ExtAuthzError):
    """The JWKS could not be read, fetched or used; no token can be checked against it."""


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    header: Mapping[str, Any]
    claims: Mapping[str, Any]

    def to_json(self) -> str:
        return json.dumps({"header": self.header, "claims": self.claims}, indent=2, sort_keys=True)


@dataclass(frozen=True, slots=True)
class Ed25519KeySet:
    """The OKP Ed25519 verification keys of a JWKS, by kid. `skipped` names the kids of other
    keys (RSA, EC, encryption keys), so a token naming one gets a precise refusal."""

    keys: Mapping[str, Ed25519PublicKey]
    skipped: Mapping[str, str]
    source: str

    @classmethod
    def from_jwks(cls, document: object, *, source: str) -> Ed25519KeySet:
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise KeySetError(f"{source}: not a JWKS (a JSON object with a 'keys' list)")
        keys: dict[str, Ed25519PublicKey] = {}
        skipped: dict[str, str] = {}
        for index, jwk in enumerate(document["keys"]):
            if not isinstance(jwk, dict):
                raise KeySetError(f"{source}: keys[{index}] is not a JSON object")
            if "d" in jwk:
                raise KeySetError(f"{source}: keys[{index}] is a private key; a JWKS must not be")
            kid = jwk.get("kid")
            problem = _unusable_because(jwk)
            if problem is not None:
                if isinstance(kid, str):
                    skipped[kid] = problem
                continue
            if not isinstance(kid, str) or not 0 < len(kid) <= MAX_KID_LENGTH:
                continue  # a token must name its key; a key without a kid cannot be named
            if kid in keys:
                raise KeySetError(f"{source}: kid {kid!r} names two keys")
            try:
                keys[kid] = Ed25519PublicKey.from_public_bytes(_b64url_decode(jwk["x"]))
            except ValueError:
                raise KeySetError(f"{source}: kid {kid!r} is not a valid Ed25519 key") from None
        if not keys:
            raise KeySetError(f"{source}: no OKP Ed25519 signing key with a kid")
        return cls(keys, skipped, source)

    @classmethod
    def from_file(cls, path: str | Path) -> Ed25519KeySet:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise KeySetError(f"{path}: cannot read: {exc}") from None
        try:
            document = json.loads(text)
        except (ValueError, RecursionError):
            raise KeySetError(f"{path}: not JSON") from None
        return cls.from_jwks(document, source=str(path))

    @classmethod
    async def from_url(
        cls,
        url: str,
        *,
        allow_http: bool = False,
        timeout: float = DEFAULT_FETCH_TIMEOUT_SECONDS,
        session: aiohttp.ClientSession | None = None,
    ) -> Ed25519KeySet:
        """GET the JWKS (https only unless `allow_http`; redirects are not followed)."""
        scheme = urllib.parse.urlsplit(url).scheme
        if scheme != "https" and not (allow_http and scheme == "http"):
            raise KeySetError(f"{url}: the JWKS URL must be https (http needs --allow-http)")
        try:
            if session is None:
                async with aiohttp.ClientSession() as own_session:
                    response = await fetch_json(
                        url, session=own_session, timeout=timeout, max_bytes=MAX_JWKS_BYTES
                    )
            else:
                response = await fetch_json(
                    url, session=session, timeout=timeout, max_bytes=MAX_JWKS_BYTES
                )
        except FetchError as exc:
            raise KeySetError(f"cannot fetch the JWKS: {exc}") from None
        return cls.from_jwks(response.document, source=url)

    def key_for(self, kid: str) -> Ed25519PublicKey:
        key = self.keys.get(kid)
        if key is not None:
            return key
        if kid in self.skipped:
            detail = f"kid {kid!r} names a key that is not usable: {self.skipped[kid]}"
        else:
            known = ", ".join(sorted(self.keys))
            detail = f"kid {kid!r} is not in {self.source} (its Ed25519 kids: {known})"
        raise IdentityError(Reason.UNKNOWN_KID, detail)


def _unusable_because(jwk: Mapping[str, Any]) -> str | None:
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        return f"kty {jwk.get('kty')!r} crv {jwk.get('crv')!r} is not OKP Ed25519"
    if jwk.get("use", "sig") != "sig":
        return f"use {jwk.get('use')!r} is not sig"
    if jwk.get("alg", "EdDSA") not in ALGORITHMS:
        return f"alg {jwk.get('alg')!r} is not EdDSA"
    x = jwk.get("x")
    if not isinstance(x, str) or len(_b64url_decode_or_empty(x)) != 32:
        return "x is not a 32-byte base64url public key"
    return None


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64url_decode_or_empty(text: str) -> bytes:
    if not text or any(c not in _B64URL for c in text):
        return b""
    try:
        return _b64url_decode(text)
    except (ValueError, binascii.Error):
        return b""


def verify_token(
    token: str,
    keys: Ed25519KeySet,
    *,
    issuer: str,
    audience: str,
    now: float,
    leeway: float = DEFAULT_LEEWAY_SECONDS,
) -> VerifiedToken:
    """The header and claims of a token valid at `now`; IdentityError says why one is not."""
    header, claims = _read_unverified(token)
    kid = _accepted_kid(header)
    key = keys.key_for(kid)
    try:
        verified: dict[str, Any] = jwt.decode(
            token,
            key=key,
            algorithms=list(ALGORITHMS),
            audience=audience,
            issuer=issuer,
            options={
                "require": list(REQUIRED_CLAIMS),
                "verify_signature": True,
                "verify_aud": True,
                "verify_iss": True,
                "verify_exp": False,  # checked in _check_times, against `now`
                "verify_nbf": False,
                "verify_iat": False,
            },
        )
    except jwt.PyJWTError as error:
        raise from_pyjwt(error) from None
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise IdentityError(Reason.MALFORMED_TOKEN, "token could not be decoded") from None
    if verified != claims:  # one parser, one reading: refuse anything read two ways
        raise IdentityError(Reason.MALFORMED_TOKEN, "claims parse differently")
    for name in ("sub", "jti"):
        if not isinstance(claims[name], str) or not claims[name]:
            raise IdentityError(Reason.INVALID_CLAIM, f"{name} is not a non-empty string")
    _check_times(claims, now, leeway)
    return VerifiedToken(header, claims)


def _read_unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    if len(token) > MAX_TOKEN_BYTES:
        raise IdentityError(Reason.TOKEN_TOO_LARGE, f"token exceeds {MAX_TOKEN_BYTES} bytes")
    parts = token.split(".")
    if len(parts) != 3:
        raise IdentityError(Reason.MALFORMED_TOKEN, "not a compact JWS (three parts)")
    header = json_segment(parts[0], "header")
    _accepted_kid(header)  # before anything else, so `alg: none` is refused as such
    if not parts[2] or any(c not in _B64URL for c in parts[2]):
        raise IdentityError(Reason.MALFORMED_TOKEN, "signature is missing or not base64url")
    return header, json_segment(parts[1], "payload")


def _accepted_kid(header: Mapping[str, Any]) -> str:
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise IdentityError(Reason.ALG_NOT_ALLOWED, f"alg {str(alg)[:20]!r} is not EdDSA")
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.lower() not in ACCEPTED_TYPES:
        raise IdentityError(Reason.BAD_TOKEN_TYPE, f"typ {str(typ)[:40]!r} is not at+jwt")
    if "crit" in header or "b64" in header:
        raise IdentityError(Reason.CRIT_NOT_SUPPORTED, "critical header extensions unsupported")
    kid = header.get("kid")
    if not isinstance(kid, str) or not 0 < len(kid) <= MAX_KID_LENGTH:
        raise IdentityError(Reason.MISSING_KID, "header has no usable kid")
    return kid


def _check_times(claims: Mapping[str, Any], now: float, leeway: float) -> None:
    exp, nbf, iat = (numeric_date(claims, name) for name in ("exp", "nbf", "iat"))
    if exp <= iat:
        raise IdentityError(Reason.INVALID_CLAIM, "exp is not after iat")
    if exp <= now - leeway:
        raise IdentityError(Reason.TOKEN_EXPIRED, f"token expired {now - exp:.0f} s ago")
    if nbf > now + leeway:
        raise IdentityError(Reason.TOKEN_NOT_YET_VALID, "token is not valid yet (nbf)")
    if iat > now + leeway:
        raise IdentityError(Reason.IAT_IN_FUTURE, "token was issued in the future (iat)")


# --- argument types (the `verify` and `pin-keys` commands) -----------------------------


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text!r} must be zero or more seconds")
    return value


def positive_seconds(text: str) -> float:
    value = seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than zero seconds")
    return value
