"""Compact JWS, read before any key is fetched: structure, strict JSON, and an accepted header.

Nothing here is trusted yet; it decides only whether a token is worth a key lookup. Strictness
matters because PyJWT parses the same bytes again later: anything two parsers might read
differently (duplicate member names, NaN, characters outside base64url) is refused up front.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from extauthz.identity.errors import IdentityError, Reason

_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
MAX_KID_LENGTH = 256
MAX_NUMERIC_DATE = 2**40  # year ~36800: anything larger is an attack, not a date


@dataclass(frozen=True, slots=True)
class UnverifiedToken:
    """A token whose shape and header are acceptable; its claims are NOT verified."""

    kid: str
    header: Mapping[str, Any]
    claims: Mapping[str, Any]


def _reject_duplicate_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        raise ValueError("duplicate member name")
    return dict(pairs)


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def json_segment(segment: str, what: str) -> dict[str, Any]:
    # Checked first: base64's decoder would silently skip characters outside the alphabet.
    if not _SEGMENT.fullmatch(segment):
        raise IdentityError(Reason.MALFORMED_TOKEN, f"{what} is not base64url")
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        value = json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_reject_duplicate_members,
            parse_constant=_reject_constant,
        )
    except (ValueError, binascii.Error, RecursionError):
        raise IdentityError(Reason.MALFORMED_TOKEN, f"{what} is not base64url JSON") from None
    if not isinstance(value, dict):
        raise IdentityError(Reason.MALFORMED_TOKEN, f"{what} is not a JSON object")
    return value


def _accepted_kid(
    header: Mapping[str, Any], algorithms: Collection[str], types: Collection[str]
) -> str:
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in algorithms:
        # `none`, HS256 (keyed with a public key), anything not configured: refused by name.
        allowed = ", ".join(sorted(algorithms))
        raise IdentityError(Reason.ALG_NOT_ALLOWED, f"alg {str(alg)[:20]!r} is not {allowed}")
    check_type(header, types)
    if "crit" in header or "b64" in header:
        raise IdentityError(Reason.CRIT_NOT_SUPPORTED, "critical header extensions unsupported")
    # jku, x5u, jwk and x5c are deliberately never read: keys come from the issuer's JWKS.
    kid = header.get("kid")
    if not isinstance(kid, str) or not 0 < len(kid) <= MAX_KID_LENGTH:
        raise IdentityError(Reason.MISSING_KID, "header has no usable kid")
    return kid


def check_type(header: Mapping[str, Any], types: Collection[str]) -> None:
    """`typ`, when present, must be one the issuer uses: never `at+jwt` (an access token)."""
    if "typ" not in header:
        return
    typ = header["typ"]
    if not isinstance(typ, str) or typ not in types:
        raise IdentityError(Reason.BAD_TOKEN_TYPE, f"typ is not {' or '.join(sorted(types))}")


def read_unverified(
    token: str, *, algorithms: Collection[str], types: Collection[str] = ("JWT",)
) -> UnverifiedToken:
    """Split and check a compact JWS; IdentityError for anything not worth verifying.

    `algorithms` and `types` are every `alg` and `typ` any configured issuer accepts; the issuer
    the claims name narrows them later."""
    parts = token.split(".")
    if len(parts) != 3:
        raise IdentityError(Reason.MALFORMED_TOKEN, "not a compact JWS (three parts)")
    header = json_segment(parts[0], "header")
    # Before the signature check, so that alg none says so.
    kid = _accepted_kid(header, algorithms, types)
    if not _SEGMENT.fullmatch(parts[2]):
        raise IdentityError(Reason.MALFORMED_TOKEN, "signature is missing or not base64url")
    return UnverifiedToken(kid, header, json_segment(parts[1], "payload"))


def numeric_date(claims: Mapping[str, Any], name: str) -> float:
    """A NumericDate claim as a finite, sane number (bools are not numbers here)."""
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise IdentityError(Reason.INVALID_CLAIM, f"{name} is not a number")
    # Range first: math.isfinite(10**400) would raise OverflowError rather than answer.
    if not (0 <= value < MAX_NUMERIC_DATE and math.isfinite(value)):
        raise IdentityError(Reason.INVALID_CLAIM, f"{name} is out of range")
    return float(value)
