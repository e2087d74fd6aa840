"""Wire forms of what a ceremony sends that signer.frost.encoding does not cover.

A DKG Round1Package (VSS commitment and proof of knowledge) and a bare VSS commitment (a reshare
dealer's, or the trusted dealer's) get the same kind of header as frost's encodings: magic, version,
kind, ciphersuite, so one can never be read as the other. Decoding goes through frost.group's
deserialize functions, so every element is checked to be a canonical prime-order point.

`CeremonyParameters` is the plan every participant must agree on, checked once when parsed.
"""

from __future__ import annotations

import enum
import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from signer.ceremony.errors import CeremonyError
from signer.frost import EncodingError, FrostError, PublicKeyPackage
from signer.frost.dkg import ProofOfKnowledge, Round1Package
from signer.frost.encoding import decode_public_key_package, encode_public_key_package
from signer.frost.group import (
    ELEMENT_SIZE,
    SCALAR_SIZE,
    Element,
    deserialize_element,
    deserialize_scalar,
    serialize_element,
    serialize_scalar,
)
from signer.frost.keys import validate_threshold
from signer.frost.polynomial import validate_identifiers
from signer.frost.reshare import ResharePlan
from signer.frost.suite import CONTEXT_STRING
from signer.proto import ceremony_pb2 as pb

MAGIC = b"KMC"
VERSION = 1
CEREMONY_ID_SIZE = 16
# A bound on the work one Begin can ask for; far above any real signer group.
MAX_PARTICIPANTS = 255
_HEADER_SUFFIX = bytes([len(CONTEXT_STRING)]) + CONTEXT_STRING


class Kind(enum.IntEnum):
    ROUND1_PACKAGE = 1
    VSS_COMMITMENT = 2


def _header(kind: Kind) -> bytes:
    return MAGIC + bytes([VERSION, kind]) + _HEADER_SUFFIX


class _Reader:
    def __init__(self, data: bytes, kind: Kind) -> None:
        header = _header(kind)
        if data[: len(header)] != header:
            raise EncodingError(f"not a keymint ceremony {kind.name.lower()} (version {VERSION})")
        self._data = data
        self._offset = len(header)
        self._kind = kind

    def take(self, size: int) -> bytes:
        end = self._offset + size
        if end > len(self._data):
            raise EncodingError(f"{self._kind.name.lower()} is truncated")
        chunk = self._data[self._offset : end]
        self._offset = end
        return chunk

    def elements(self) -> tuple[Element, ...]:
        (count,) = struct.unpack(">H", self.take(2))
        if count == 0:
            raise EncodingError(f"{self._kind.name.lower()} has an empty commitment")
        return tuple(deserialize_element(self.take(ELEMENT_SIZE)) for _ in range(count))

    def done(self) -> None:
        if self._offset != len(self._data):
            raise EncodingError(f"{self._kind.name.lower()} has trailing bytes")


def _elements(elements: Sequence[Element]) -> bytes:
    return struct.pack(">H", len(elements)) + b"".join(serialize_element(e) for e in elements)


def encode_round1_package(package: Round1Package) -> bytes:
    return (
        _header(Kind.ROUND1_PACKAGE)
        + serialize_scalar(package.identifier)
        + _elements(package.commitment)
        + serialize_element(package.proof.commitment)
        + serialize_scalar(package.proof.response)
    )


def decode_round1_package(data: bytes) -> Round1Package:
    reader = _Reader(data, Kind.ROUND1_PACKAGE)
    try:
        identifier = deserialize_scalar(reader.take(SCALAR_SIZE))
        commitment = reader.elements()
        proof = ProofOfKnowledge(
            deserialize_element(reader.take(ELEMENT_SIZE)),
            deserialize_scalar(reader.take(SCALAR_SIZE)),
        )
    except EncodingError:
        raise
    except FrostError as exc:
        raise EncodingError(f"round1 package: {exc}") from exc
    reader.done()
    return Round1Package(identifier, commitment, proof)


def encode_vss_commitment(commitment: Sequence[Element]) -> bytes:
    return _header(Kind.VSS_COMMITMENT) + _elements(commitment)


def decode_vss_commitment(data: bytes) -> tuple[Element, ...]:
    reader = _Reader(data, Kind.VSS_COMMITMENT)
    try:
        commitment = reader.elements()
    except EncodingError:
        raise
    except FrostError as exc:
        raise EncodingError(f"vss commitment: {exc}") from exc
    reader.done()
    return commitment


class CeremonyKind(enum.Enum):
    DKG = pb.CEREMONY_KIND_DKG
    RESHARE = pb.CEREMONY_KIND_RESHARE
    DEAL = pb.CEREMONY_KIND_DEAL


@dataclass(frozen=True, slots=True)
class CeremonyParameters:
    """Who deals, who receives, the new threshold and (reshare) the key being reshared."""

    ceremony_id: bytes
    kind: CeremonyKind
    min_participants: int
    dealers: tuple[int, ...]
    recipients: tuple[int, ...]
    old_package: PublicKeyPackage | None = None
    replace_existing_key: bool = False

    def __post_init__(self) -> None:
        try:
            self._validate()
        except FrostError as exc:
            raise CeremonyError(f"invalid ceremony parameters: {exc}") from exc

    def _validate(self) -> None:
        if len(self.ceremony_id) != CEREMONY_ID_SIZE:
            raise CeremonyError(f"ceremony id must be {CEREMONY_ID_SIZE} bytes")
        for name, group in (("dealers", self.dealers), ("recipients", self.recipients)):
            validate_identifiers(group)
            if list(group) != sorted(group):
                raise CeremonyError(f"{name} must be in ascending order")
        if len(self.participants) > MAX_PARTICIPANTS:
            raise CeremonyError(f"more than {MAX_PARTICIPANTS} participants")
        validate_threshold(self.min_participants, len(self.recipients))
        if self.kind is CeremonyKind.DKG and self.dealers != self.recipients:
            raise CeremonyError("in a DKG every participant deals and receives")
        if self.kind is CeremonyKind.DEAL and self.dealers:
            raise CeremonyError("a trusted-dealer install has no signer dealing")
        if (self.kind is CeremonyKind.RESHARE) != (self.old_package is not None):
            raise CeremonyError("the current public key package comes with a reshare, only")
        if self.old_package is not None:
            self.reshare_plan()
            missing = [d for d in self.dealers if d not in self.old_package.verifying_shares]
            if missing:
                raise CeremonyError(f"dealers {missing} hold no share of the current key")
            if len(self.dealers) < self.old_package.min_participants:
                raise CeremonyError(
                    f"{len(self.dealers)} dealers are fewer than the current threshold "
                    f"{self.old_package.min_participants}"
                )

    @property
    def participants(self) -> tuple[int, ...]:
        return tuple(sorted({*self.dealers, *self.recipients}))

    @property
    def ceremony_name(self) -> str:
        return self.ceremony_id.hex()

    def reshare_plan(self) -> ResharePlan:
        return ResharePlan(self.dealers, self.recipients, self.min_participants)

    def encode(self) -> bytes:
        message = pb.Parameters(
            ceremony_id=self.ceremony_id,
            kind=self.kind.value,
            min_participants=self.min_participants,
            dealers=self.dealers,
            recipients=self.recipients,
            old_public_key_package=(
                encode_public_key_package(self.old_package) if self.old_package else b""
            ),
            replace_existing_key=self.replace_existing_key,
        )
        return message.SerializeToString(deterministic=True)

    @classmethod
    def decode(cls, data: bytes) -> CeremonyParameters:
        try:
            message = pb.Parameters.FromString(data)
            kind = CeremonyKind(message.kind)
            old = message.old_public_key_package
            return cls(
                ceremony_id=message.ceremony_id,
                kind=kind,
                min_participants=message.min_participants,
                dealers=tuple(message.dealers),
                recipients=tuple(message.recipients),
                old_package=decode_public_key_package(old) if old else None,
                replace_existing_key=message.replace_existing_key,
            )
        except (DecodeError, ValueError, FrostError) as exc:  # ValueError: an unknown kind
            raise CeremonyError(f"unreadable ceremony parameters: {exc}") from exc


def parameters_digest(encoded: bytes) -> bytes:
    """What each participant signs into its announcement: the exact parameter bytes it was given."""
    return hashlib.sha256(b"keymint ceremony parameters v1\x00" + encoded).digest()
