"""Errors of the FROST core. Each carries the data that says what was wrong."""

from __future__ import annotations

from signer.errors import SignerError


class FrostError(SignerError):
    """Root of the FROST core's errors."""


class InvalidScalar(FrostError):
    """A scalar encoding was not 32 bytes or not below the group order L."""


class InvalidElement(FrostError):
    """An element encoding was not canonical, was the identity, or left the prime-order subgroup."""


class InvalidIdentifier(FrostError):
    """An identifier was zero, out of range, or repeated."""


class InvalidParameters(FrostError):
    """The threshold or participant count broke MIN <= participants <= MAX."""


class InvalidCommitmentList(FrostError):
    """A commitment list was unsorted, repeated a participant, or left out this signer."""


class InvalidSignatureShare(FrostError):
    """Signature shares failed verify_signature_share; `culprits` names their signers."""

    def __init__(self, culprits: tuple[int, ...]) -> None:
        self.culprits = culprits
        names = ", ".join(str(c) for c in culprits)
        super().__init__(f"invalid signature share from participant(s) {names}")


class InvalidSignature(FrostError):
    """A signature did not verify under the group public key."""


class CheatingParticipant(FrostError):
    """A DKG or resharing participant sent a bad share or proof; `identifier` names it."""

    def __init__(self, identifier: int, reason: str) -> None:
        self.identifier = identifier
        self.reason = reason
        super().__init__(f"participant {identifier}: {reason}")


class EncodingError(FrostError):
    """A serialized object had the wrong version, kind, ciphersuite or length."""
