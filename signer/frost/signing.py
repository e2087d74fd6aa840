"""Two-round FROST signing: RFC 9591 sections 4 and 5.

Round one (`commit`, 5.1) runs ahead of time; round two (`sign`, 5.2) is the request path; the
coordinator's `aggregate` (5.3) is split into `prepare_aggregate`, which needs only the
commitment list and message and so can run while the signers work, and `finish_aggregate`, which
sums the shares and verifies the result as a plain Ed25519 signature. Only when that fails is each
share checked with `verify_signature_share`, to name the signers that misbehaved.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from nacl import bindings as _sodium
from nacl.exceptions import BadSignatureError as _BadSignature

from signer.frost.errors import InvalidCommitmentList, InvalidSignature, InvalidSignatureShare
from signer.frost.group import (
    ORDER,
    Element,
    RandomBytes,
    Scalar,
    element_add,
    element_sum,
    scalar_base_mult,
    scalar_mult,
    serialize_element,
    serialize_scalar,
)
from signer.frost.keys import KeyShare, PublicKeyPackage
from signer.frost.polynomial import derive_interpolating_value
from signer.frost.suite import h1, h2, h3, h4, h5

SIGNATURE_SIZE = 64


@dataclass(frozen=True, slots=True)
class SigningCommitment:
    """A participant's public round-one output: (identifier, D, E)."""

    identifier: int
    hiding: Element
    binding: Element


@dataclass(frozen=True, slots=True)
class SigningNonces:
    """A participant's secret round-one output. Used for one signature, then discarded."""

    hiding: Scalar = field(repr=False)
    binding: Scalar = field(repr=False)
    commitment: SigningCommitment


@dataclass(frozen=True, slots=True)
class SignatureShare:
    identifier: int
    share: Scalar


# -- 4.1 Nonce generation ---------------------------------------------------------------------


def nonce_generate(secret: int, rng: RandomBytes = os.urandom) -> Scalar:
    """Hedged nonce: H3(random_bytes || SerializeScalar(secret)), safe even if rng is weak."""
    return h3(rng(32) + serialize_scalar(secret))


# -- 4.3 List operations and 4.4 binding factors ----------------------------------------------


def encode_group_commitment_list(commitment_list: Sequence[SigningCommitment]) -> bytes:
    return b"".join(
        serialize_scalar(c.identifier) + serialize_element(c.hiding) + serialize_element(c.binding)
        for c in commitment_list
    )


def binding_factor_inputs(
    group_public_key: Element, commitment_list: Sequence[SigningCommitment], msg: bytes
) -> dict[int, bytes]:
    """The rho_input of each participant: the bytes H1 hashes into its binding factor."""
    prefix = (
        serialize_element(group_public_key)
        + h4(msg)
        + h5(encode_group_commitment_list(commitment_list))
    )
    return {c.identifier: prefix + serialize_scalar(c.identifier) for c in commitment_list}


def compute_binding_factors(
    group_public_key: Element, commitment_list: Sequence[SigningCommitment], msg: bytes
) -> dict[int, Scalar]:
    inputs = binding_factor_inputs(group_public_key, commitment_list, msg)
    return {identifier: h1(rho_input) for identifier, rho_input in inputs.items()}


# -- 4.5 Group commitment and 4.6 challenge ---------------------------------------------------


def compute_group_commitment(
    commitment_list: Sequence[SigningCommitment],
    binding_factors: Mapping[int, int],
    known_nonces: SigningNonces | None = None,
) -> Element:
    """sum(D_i + [rho_i]E_i).

    A signer knows the discrete logarithms of its own D and E, so its term is computed as one base
    multiplication [d + rho*e]B, about a quarter of the cost of the variable-base [rho]E.
    """
    terms: list[Element] = []
    for c in commitment_list:
        rho = binding_factors[c.identifier]
        if known_nonces is not None and c.identifier == known_nonces.commitment.identifier:
            terms.append(scalar_base_mult(known_nonces.hiding + rho * known_nonces.binding))
        else:
            terms.append(element_add(c.hiding, scalar_mult(rho, c.binding)))
    return element_sum(terms)


def compute_challenge(group_commitment: Element, group_public_key: Element, msg: bytes) -> Scalar:
    return h2(serialize_element(group_commitment) + serialize_element(group_public_key) + msg)


def validate_commitment_list(
    commitment_list: Sequence[SigningCommitment], min_participants: int, max_participants: int
) -> list[int]:
    """Sorted by identifier, no repeats, MIN <= count <= MAX. Returns the participant list."""
    participants = [c.identifier for c in commitment_list]
    if not min_participants <= len(participants) <= max_participants:
        raise InvalidCommitmentList(
            f"{len(participants)} commitments; need between {min_participants} "
            f"and {max_participants}"
        )
    for before, after in itertools.pairwise(participants):
        if before >= after:
            raise InvalidCommitmentList(
                f"commitment list must be sorted with no repeats; {after} follows {before}"
            )
    if participants[0] <= 0 or participants[-1] >= ORDER:
        raise InvalidCommitmentList("commitment list holds an identifier that is not a scalar")
    return participants


# -- 5.1 Round one ----------------------------------------------------------------------------


def commit(key_share: KeyShare, rng: RandomBytes = os.urandom) -> SigningNonces:
    hiding = nonce_generate(key_share.signing_share, rng)
    binding = nonce_generate(key_share.signing_share, rng)
    commitment = SigningCommitment(
        key_share.identifier, scalar_base_mult(hiding), scalar_base_mult(binding)
    )
    return SigningNonces(hiding, binding, commitment)


# -- 5.2 Round two ----------------------------------------------------------------------------


def sign(
    key_share: KeyShare,
    nonces: SigningNonces,
    msg: bytes,
    commitment_list: Sequence[SigningCommitment],
) -> SignatureShare:
    """A signature share over msg. The caller must discard `nonces` whatever the outcome."""
    participants = validate_commitment_list(
        commitment_list, key_share.min_participants, key_share.max_participants
    )
    identifier = key_share.identifier
    if nonces.commitment.identifier != identifier:
        raise InvalidCommitmentList(
            f"nonces belong to participant {nonces.commitment.identifier}, not {identifier}"
        )
    if nonces.commitment not in commitment_list:
        raise InvalidCommitmentList(
            f"participant {identifier}'s own commitment is missing from the commitment list"
        )
    gpk = key_share.group_public_key
    binding_factors = compute_binding_factors(gpk, commitment_list, msg)
    group_commitment = compute_group_commitment(commitment_list, binding_factors, nonces)
    lambda_i = derive_interpolating_value(participants, identifier)
    challenge = compute_challenge(group_commitment, gpk, msg)
    z = (
        nonces.hiding
        + nonces.binding * binding_factors[identifier]
        + lambda_i * key_share.signing_share * challenge
    ) % ORDER
    return SignatureShare(identifier, Scalar(z))


# -- 5.3 Aggregation and 5.4 share verification -----------------------------------------------


@dataclass(frozen=True, slots=True)
class PreparedAggregate:
    """Everything aggregation needs that does not depend on the signature shares."""

    msg: bytes
    commitment_list: tuple[SigningCommitment, ...]
    public_key_package: PublicKeyPackage
    participants: tuple[int, ...]
    binding_factors: Mapping[int, Scalar]
    group_commitment: Element
    challenge: Scalar


def prepare_aggregate(
    commitment_list: Sequence[SigningCommitment],
    msg: bytes,
    public_key_package: PublicKeyPackage,
) -> PreparedAggregate:
    pkp = public_key_package
    participants = validate_commitment_list(
        commitment_list, pkp.min_participants, len(pkp.verifying_shares)
    )
    unknown = [x for x in participants if x not in pkp.verifying_shares]
    if unknown:
        raise InvalidCommitmentList(f"commitments from unknown participant(s) {unknown}")
    gpk = pkp.group_public_key
    binding_factors = compute_binding_factors(gpk, commitment_list, msg)
    group_commitment = compute_group_commitment(commitment_list, binding_factors)
    challenge = compute_challenge(group_commitment, gpk, msg)
    return PreparedAggregate(
        msg,
        tuple(commitment_list),
        pkp,
        tuple(participants),
        binding_factors,
        group_commitment,
        challenge,
    )


def finish_aggregate(prepared: PreparedAggregate, sig_shares: Sequence[SignatureShare]) -> bytes:
    """Sum the shares into (R, z), release it only if it verifies as Ed25519.

    Raises InvalidSignatureShare naming every signer whose share fails verify_signature_share.
    """
    by_identifier = {s.identifier: s for s in sig_shares}
    if sorted(by_identifier) != list(prepared.participants) or len(sig_shares) != len(
        by_identifier
    ):
        raise InvalidCommitmentList(
            f"signature shares from {sorted(by_identifier)} do not match the commitment list "
            f"{list(prepared.participants)}"
        )
    z = sum(s.share for s in sig_shares) % ORDER
    signature = serialize_element(prepared.group_commitment) + serialize_scalar(z)
    gpk = prepared.public_key_package.group_public_key
    if verify(gpk, prepared.msg, signature):
        return signature
    culprits = tuple(
        s.identifier
        for s in sorted(sig_shares, key=lambda s: s.identifier)
        if not _share_is_valid(prepared, s)
    )
    if culprits:
        raise InvalidSignatureShare(culprits)
    raise InvalidSignature("aggregate signature does not verify, yet every share does")


def aggregate(
    commitment_list: Sequence[SigningCommitment],
    msg: bytes,
    public_key_package: PublicKeyPackage,
    sig_shares: Sequence[SignatureShare],
) -> bytes:
    """RFC 9591 5.3 in one call: the 64-byte Ed25519 signature R || z."""
    return finish_aggregate(prepare_aggregate(commitment_list, msg, public_key_package), sig_shares)


def verify_signature_share(
    identifier: int,
    verifying_share: Element,
    commitment: SigningCommitment,
    sig_share: Scalar,
    commitment_list: Sequence[SigningCommitment],
    group_public_key: Element,
    msg: bytes,
) -> bool:
    """Section 5.4: [z_i]B == D_i + [rho_i]E_i + [c * lambda_i]PK_i."""
    if commitment.identifier != identifier or commitment not in commitment_list:
        return False
    participants = [c.identifier for c in commitment_list]
    binding_factors = compute_binding_factors(group_public_key, commitment_list, msg)
    group_commitment = compute_group_commitment(commitment_list, binding_factors)
    challenge = compute_challenge(group_commitment, group_public_key, msg)
    lambda_i = derive_interpolating_value(participants, identifier)
    return _share_matches(
        sig_share, commitment, binding_factors[identifier], verifying_share, challenge * lambda_i
    )


def _share_is_valid(prepared: PreparedAggregate, share: SignatureShare) -> bool:
    identifier = share.identifier
    commitment = next(c for c in prepared.commitment_list if c.identifier == identifier)
    lambda_i = derive_interpolating_value(prepared.participants, identifier)
    return _share_matches(
        share.share,
        commitment,
        prepared.binding_factors[identifier],
        prepared.public_key_package.verifying_shares[identifier],
        prepared.challenge * lambda_i,
    )


def _share_matches(
    z: int, commitment: SigningCommitment, rho: int, verifying_share: Element, weight: int
) -> bool:
    comm_share = element_add(commitment.hiding, scalar_mult(rho, commitment.binding))
    return scalar_base_mult(z) == element_add(comm_share, scalar_mult(weight, verifying_share))


# -- Verification (Appendix A: the result is a plain Ed25519 signature) ------------------------


def verify(group_public_key: Element, msg: bytes, signature: bytes) -> bool:
    """Plain RFC 8032 Ed25519 verification, by libsodium."""
    if len(signature) != SIGNATURE_SIZE:
        return False
    try:
        _sodium.crypto_sign_open(bytes(signature) + msg, bytes(group_public_key))
    except _BadSignature:
        return False
    return True
