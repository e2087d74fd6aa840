"""RFC 9591 FROST(Ed25519, SHA-512), sans-IO: bytes in, bytes out.

Hazmat: these are the threshold-signing primitives. A signer service, a coordinator and share vaults
are built on them elsewhere in `signer`; nothing here does I/O, keeps time or holds state between
calls. Randomness is an argument (`rng`, default `os.urandom`).
"""

from signer.frost.errors import (
    CheatingParticipant,
    EncodingError,
    FrostError,
    InvalidCommitmentList,
    InvalidElement,
    InvalidIdentifier,
    InvalidParameters,
    InvalidScalar,
    InvalidSignature,
    InvalidSignatureShare,
)
from signer.frost.keys import KeyShare, PublicKeyPackage, trusted_dealer_keygen
from signer.frost.signing import (
    PreparedAggregate,
    SignatureShare,
    SigningCommitment,
    SigningNonces,
    aggregate,
    commit,
    finish_aggregate,
    prepare_aggregate,
    sign,
    verify,
    verify_signature_share,
)
from signer.frost.suite import SUITE_ID

__all__ = [
    "SUITE_ID",
    "CheatingParticipant",
    "EncodingError",
    "FrostError",
    "InvalidCommitmentList",
    "InvalidElement",
    "InvalidIdentifier",
    "InvalidParameters",
    "InvalidScalar",
    "InvalidSignature",
    "InvalidSignatureShare",
    "KeyShare",
    "PreparedAggregate",
    "PublicKeyPackage",
    "SignatureShare",
    "SigningCommitment",
    "SigningNonces",
    "aggregate",
    "commit",
    "finish_aggregate",
    "prepare_aggregate",
    "sign",
    "trusted_dealer_keygen",
    "verify",
    "verify_signature_share",
]
