"""Versioned wire and at-rest encodings of FROST objects.

Every encoding starts with a header: b"KMF", a format version, a kind byte and the ciphersuite id,
so a share sealed today is refused loudly by an incompatible reader tomorrow, and a commitment can
never be mistaken for a signature share. Decoding validates every scalar and element it reads.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from enum import IntEnum
from typing import TypeVar

from signer.frost.errors import EncodingError, FrostError
from signer.frost.group import (
    ELEMENT_SIZE,
    SCALAR_SIZE,
    Element,
    Scalar,
    deserialize_element,
    deserialize_scalar,
    serialize_element,
    serialize_scalar,
)
from signer.frost.keys import KeyShare, PublicKeyPackage
from signer.frost.signing import SignatureShare, SigningCommitment
from signer.frost.suite import CONTEXT_STRING

MAGIC = b"KMF"
VERSION = 1
_HEADER_SUFFIX = bytes([len(CONTEXT_STRING)]) + CONTEXT_STRING
_HEADER_SIZE = len(MAGIC) + 2 + len(_HEADER_SUFFIX)
_COMMITMENT_SIZE = SCALAR_SIZE + 2 * ELEMENT_SIZE

T = TypeVar("T")


class Kind(IntEnum):
    KEY_SHARE = 1
    PUBLIC_KEY_PACKAGE = 2
    SIGNING_COMMITMENT = 3
    SIGNATURE_SHARE = 4
    COMMITMENT_LIST = 5


class _Reader:
    def __init__(self, data: bytes, kind: Kind) -> None:
        self._data = memoryview(data)
        self._offset = 0
        self.kind = kind

    def take(self, size: int) -> bytes:
        end = self._offset + size
        if end > len(self._data):
            raise EncodingError(f"{self.kind.name.lower()} is truncated at byte {self._offset}")
        chunk = bytes(self._data[self._offset : end])
        self._offset = end
        return chunk

    def scalar(self) -> Scalar:
        return deserialize_scalar(self.take(SCALAR_SIZE))

    def element(self) -> Element:
        return deserialize_element(self.take(ELEMENT_SIZE))

    def u16(self) -> int:
        value: int = struct.unpack(">H", self.take(2))[0]
        return value

    def done(self) -> None:
        if self._offset != len(self._data):
            extra = len(self._data) - self._offset
            raise EncodingError(f"{self.kind.name.lower()} has {extra} trailing bytes")


def _header(kind: Kind) -> bytes:
    return MAGIC + bytes([VERSION, kind]) + _HEADER_SUFFIX


def _open(data: bytes, kind: Kind) -> _Reader:
    if len(data) < _HEADER_SIZE or data[: len(MAGIC)] != MAGIC:
        raise EncodingError(f"not a keymint FROST encoding (expected a {kind.name.lower()})")
    version, found = data[len(MAGIC)], data[len(MAGIC) + 1]
    if version != VERSION:
        raise EncodingError(f"unsupported encoding version {version}; this build reads {VERSION}")
    if found != kind:
        found_name = Kind(found).name.lower() if found in Kind._value2member_map_ else str(found)
        raise EncodingError(f"expected a {kind.name.lower()}, found a {found_name}")
    if data[len(MAGIC) + 2 : _HEADER_SIZE] != _HEADER_SUFFIX:
        raise EncodingError(f"ciphersuite is not {CONTEXT_STRING.decode()}")
    reader = _Reader(data, kind)
    reader.take(_HEADER_SIZE)
    return reader


def _decode(data: bytes, kind: Kind, body: Callable[[_Reader], T]) -> T:
    reader = _open(data, kind)
    try:
        value = body(reader)
    except EncodingError:
        raise
    except FrostError as exc:
        raise EncodingError(f"{kind.name.lower()}: {exc}") from exc
    reader.done()
    return value


def _commitment_body(c: SigningCommitment) -> bytes:
    return (
        serialize_scalar(c.identifier) + serialize_element(c.hiding) + serialize_element(c.binding)
    )


def _read_commitment(r: _Reader) -> SigningCommitment:
    return SigningCommitment(r.scalar(), r.element(), r.element())


def encode_key_share(share: KeyShare) -> bytes:
    return (
        _header(Kind.KEY_SHARE)
        + serialize_scalar(share.identifier)
        + serialize_scalar(share.signing_share)
        + serialize_element(share.group_public_key)
        + struct.pack(">HH", share.min_participants, share.max_participants)
    )


def decode_key_share(data: bytes) -> KeyShare:
    return _decode(
        data,
        Kind.KEY_SHARE,
        lambda r: KeyShare(r.scalar(), r.scalar(), r.element(), r.u16(), r.u16()),
    )


def encode_public_key_package(package: PublicKeyPackage) -> bytes:
    shares = package.verifying_shares
    return (
        _header(Kind.PUBLIC_KEY_PACKAGE)
        + serialize_element(package.group_public_key)
        + struct.pack(">HH", package.min_participants, len(shares))
        + b"".join(serialize_scalar(x) + serialize_element(shares[x]) for x in sorted(shares))
    )


def decode_public_key_package(data: bytes) -> PublicKeyPackage:
    def body(r: _Reader) -> PublicKeyPackage:
        group_public_key, min_participants, count = r.element(), r.u16(), r.u16()
        shares: dict[int, Element] = {}
        for _ in range(count):
            identifier = r.scalar()
            if identifier in shares:
                raise EncodingError(f"public key package repeats identifier {identifier}")
            shares[identifier] = r.element()
        return PublicKeyPackage(group_public_key, shares, min_participants)

    return _decode(data, Kind.PUBLIC_KEY_PACKAGE, body)


def encode_signing_commitment(commitment: SigningCommitment) -> bytes:
    return _header(Kind.SIGNING_COMMITMENT) + _commitment_body(commitment)


def decode_signing_commitment(data: bytes) -> SigningCommitment:
    return _decode(data, Kind.SIGNING_COMMITMENT, _read_commitment)


def encode_commitment_list(commitment_list: Sequence[SigningCommitment]) -> bytes:
    return (
        _header(Kind.COMMITMENT_LIST)
        + struct.pack(">H", len(commitment_list))
        + b"".join(_commitment_body(c) for c in commitment_list)
    )


def commitment_key(commitment: SigningCommitment) -> bytes:
    """The commitment's wire bytes, as used to look it up among already-validated commitments."""
    return _commitment_body(commitment)


def decode_commitment_list(
    data: bytes, *, known: Mapping[bytes, SigningCommitment] | None = None
) -> list[SigningCommitment]:
    """Decode and validate a commitment list.

    `known` maps `commitment_key(c)` to commitments the reader has already validated: a signer's
    own, and peers' commitments it checked when they were announced ahead of time. Those entries
    are matched byte for byte instead of paying two subgroup checks each on the signing path.
    """
    known = known or {}

    def body(r: _Reader) -> list[SigningCommitment]:
        commitments = []
        for _ in range(r.u16()):
            raw = r.take(_COMMITMENT_SIZE)
            found = known.get(raw)
            if found is None:
                found = _read_commitment(_Reader(raw, Kind.SIGNING_COMMITMENT))
            commitments.append(found)
        return commitments

    return _decode(data, Kind.COMMITMENT_LIST, body)


def encode_signature_share(share: SignatureShare) -> bytes:
    return (
        _header(Kind.SIGNATURE_SHARE)
        + serialize_scalar(share.identifier)
        + serialize_scalar(share.share)
    )


def decode_signature_share(data: bytes) -> SignatureShare:
    return _decode(data, Kind.SIGNATURE_SHARE, lambda r: SignatureShare(r.scalar(), r.scalar()))
