"""The FROST(Ed25519, SHA-512) ciphersuite's hash functions, RFC 9591 section 6.5."""

from __future__ import annotations

import hashlib

from signer.frost.group import ORDER, Scalar

CONTEXT_STRING = b"FROST-ED25519-SHA512-v1"
SUITE_ID = CONTEXT_STRING.decode()


def _h(*parts: bytes) -> bytes:
    digest = hashlib.sha512()
    for part in parts:
        digest.update(part)
    return digest.digest()


def _to_scalar(digest: bytes) -> Scalar:
    return Scalar(int.from_bytes(digest, "little") % ORDER)


def h1(m: bytes) -> Scalar:
    """H1: binding factors, SHA-512(contextString || "rho" || m) mod L."""
    return _to_scalar(_h(CONTEXT_STRING, b"rho", m))


def h2(m: bytes) -> Scalar:
    """H2: the challenge, SHA-512(m) mod L, without context string: the result is plain Ed25519."""
    return _to_scalar(_h(m))


def h3(m: bytes) -> Scalar:
    """H3: nonce generation, SHA-512(contextString || "nonce" || m) mod L."""
    return _to_scalar(_h(CONTEXT_STRING, b"nonce", m))


def h4(m: bytes) -> bytes:
    """H4: the message hash, SHA-512(contextString || "msg" || m)."""
    return _h(CONTEXT_STRING, b"msg", m)


def h5(m: bytes) -> bytes:
    """H5: the commitment-list hash, SHA-512(contextString || "com" || m)."""
    return _h(CONTEXT_STRING, b"com", m)


def hdkg(m: bytes) -> Scalar:
    """HDKG: the DKG proof-of-knowledge challenge, SHA-512(contextString || "dkg" || m) mod L.

    Not part of RFC 9591; this is the domain separation ZcashFoundation's frost uses, which the DKG
    vector in ../shared/vectors/frost/vectors_dkg.json was made with.
    """
    return _to_scalar(_h(CONTEXT_STRING, b"dkg", m))
