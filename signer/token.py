"""The keymint token format: the gateway builds tokens in it, the signers guard against it.

A minted token is a compact JWS (RFC 7515) over JSON claims with the header
`{"alg": "EdDSA", "kid": <kid>, "typ": "at+jwt"}` (RFC 9068's access-token type). `kid` is the
RFC 7638 JWK thumbprint of the group public key, so it changes exactly when the key does.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from signer.errors import SignerError

ALG = "EdDSA"
TYP = "at+jwt"
MAX_SIGNING_INPUT = 16 * 1024


class TokenFormatError(SignerError):
    """A signing input that is not a keymint JWT; `reason` says which part is wrong."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"not a keymint token: {reason}")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    if not _B64URL.fullmatch(text):
        raise TokenFormatError("segment is not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def public_jwk(group_public_key: bytes) -> dict[str, str]:
    """The group key as an RFC 8037 OKP JWK, with kid, alg and use."""
    x = b64url(group_public_key)
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": x,
        "kid": kid_for(group_public_key),
        "alg": ALG,
        "use": "sig",
    }


def kid_for(group_public_key: bytes) -> str:
    """RFC 7638 thumbprint: SHA-256 over the required members in lexicographic order."""
    canonical = json.dumps(
        {"crv": "Ed25519", "kty": "OKP", "x": b64url(group_public_key)},
        separators=(",", ":"),
        sort_keys=True,
    )
    return b64url(hashlib.sha256(canonical.encode()).digest())


def header_for(group_public_key: bytes) -> dict[str, str]:
    return {"alg": ALG, "kid": kid_for(group_public_key), "typ": TYP}


def signing_input(header: Mapping[str, Any], claims: Mapping[str, Any]) -> bytes:
    """base64url(header) "." base64url(claims): the bytes the signers sign."""
    return f"{_encode_json(header)}.{_encode_json(claims)}".encode()


def _encode_json(value: Mapping[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":"), sort_keys=True).encode())


def compact(message: bytes, signature: bytes) -> str:
    return f"{message.decode()}.{b64url(signature)}"


@dataclass(frozen=True, slots=True)
class ParsedToken:
    header: Mapping[str, Any]
    claims: Mapping[str, Any]


def parse_signing_input(message: bytes) -> ParsedToken:
    """Parse the two JSON segments of a signing input; refuse anything that is not plain JSON."""
    if len(message) > MAX_SIGNING_INPUT:
        raise TokenFormatError(f"signing input is {len(message)} bytes, over {MAX_SIGNING_INPUT}")
    try:
        text = message.decode("ascii")
    except UnicodeDecodeError:
        raise TokenFormatError("signing input is not ASCII") from None
    parts = text.split(".")
    if len(parts) != 2:
        raise TokenFormatError(f"signing input has {len(parts)} segments, expected 2")
    header, claims = (
        _json_object(part, name) for part, name in zip(parts, ("header", "claims"), strict=True)
    )
    return ParsedToken(header, claims)


def _json_object(segment: str, name: str) -> dict[str, Any]:
    try:
        value = json.loads(b64url_decode(segment))
    except (ValueError, UnicodeDecodeError, RecursionError):  # nesting deeper than Python's stack
        raise TokenFormatError(f"{name} is not JSON") from None
    if not isinstance(value, dict):
        raise TokenFormatError(f"{name} is not a JSON object")
    return value
