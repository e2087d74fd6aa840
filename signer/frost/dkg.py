"""Distributed key generation: the FROST paper's Pedersen DKG, as ZcashFoundation's frost runs it.

No participant ever holds the group secret: each picks a random polynomial, publishes commitments to
its coefficients with a Schnorr proof of knowledge of the constant term (part 1), sends each other
participant its polynomial's value at their identifier over a private channel (part 2), and checks
what it received against the commitments before summing it into its share (part 3). A bad proof or
share raises CheatingParticipant naming the sender.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from signer.frost.errors import CheatingParticipant, InvalidParameters
from signer.frost.group import (
    ORDER,
    Element,
    RandomBytes,
    Scalar,
    element_add,
    element_sum,
    random_scalar,
    scalar_base_mult,
    scalar_mult,
    serialize_element,
    serialize_scalar,
)
from signer.frost.keys import (
    KeyShare,
    PublicKeyPackage,
    derive_public_key_package,
    validate_threshold,
)
from signer.frost.polynomial import (
    polynomial_evaluate,
    validate_identifiers,
    vss_commit,
    vss_verify,
)
from signer.frost.suite import hdkg


@dataclass(frozen=True, slots=True)
class ProofOfKnowledge:
    """A Schnorr signature (R, mu) proving knowledge of the constant term a_0."""

    commitment: Element
    response: Scalar


@dataclass(frozen=True, slots=True)
class Round1Package:
    """Broadcast to every participant: the VSS commitment and the proof of knowledge."""

    identifier: int
    commitment: tuple[Element, ...]
    proof: ProofOfKnowledge


@dataclass(frozen=True, slots=True)
class Round1Secret:
    """Kept by its participant until part 2: the polynomial itself."""

    identifier: int
    coefficients: tuple[Scalar, ...] = field(repr=False)
    min_participants: int
    max_participants: int


@dataclass(frozen=True, slots=True)
class Round2Package:
    """Sent privately from `sender` to `recipient`: f_sender(recipient)."""

    sender: int
    recipient: int
    share: Scalar = field(repr=False)


def proof_challenge(identifier: int, constant_commitment: Element, r: Element) -> Scalar:
    return hdkg(
        serialize_scalar(identifier) + serialize_element(constant_commitment) + serialize_element(r)
    )


def prove_knowledge(
    identifier: int, secret: int, constant_commitment: Element, nonce: int
) -> ProofOfKnowledge:
    r = scalar_base_mult(nonce)
    c = proof_challenge(identifier, constant_commitment, r)
    return ProofOfKnowledge(r, Scalar((nonce + secret * c) % ORDER))


def verify_proof_of_knowledge(package: Round1Package) -> bool:
    """R == [mu]B - [c]C_0."""
    constant = package.commitment[0]
    c = proof_challenge(package.identifier, constant, package.proof.commitment)
    expected = element_add(
        scalar_base_mult(package.proof.response), scalar_mult(ORDER - c, constant)
    )
    return expected == package.proof.commitment


def part1(
    identifier: int,
    min_participants: int,
    max_participants: int,
    *,
    rng: RandomBytes = os.urandom,
) -> tuple[Round1Secret, Round1Package]:
    coefficients = [random_scalar(rng) for _ in range(min_participants)]
    return round1_from_polynomial(
        identifier, coefficients, min_participants, max_participants, random_scalar(rng)
    )


def round1_from_polynomial(
    identifier: int,
    coefficients: Sequence[int],
    min_participants: int,
    max_participants: int,
    proof_nonce: int,
) -> tuple[Round1Secret, Round1Package]:
    """The deterministic half of part 1, so vectors can be replayed."""
    validate_threshold(min_participants, max_participants)
    validate_identifiers([identifier])
    if len(coefficients) != min_participants:
        raise InvalidParameters(f"need {min_participants} coefficients, got {len(coefficients)}")
    commitment = tuple(vss_commit(coefficients))
    proof = prove_knowledge(identifier, coefficients[0], commitment[0], proof_nonce)
    secret = Round1Secret(
        identifier,
        tuple(Scalar(a) for a in coefficients),
        min_participants,
        max_participants,
    )
    return secret, Round1Package(identifier, commitment, proof)


def part2(
    secret: Round1Secret, round1_packages: Mapping[int, Round1Package]
) -> dict[int, Round2Package]:
    """Check everyone else's round-one package, then compute the share owed to each of them."""
    _check_round1(secret, round1_packages)
    return {
        j: Round2Package(secret.identifier, j, polynomial_evaluate(j, secret.coefficients))
        for j in sorted(round1_packages)
    }


def part3(
    secret: Round1Secret,
    round1_packages: Mapping[int, Round1Package],
    round2_packages: Mapping[int, Round2Package],
) -> tuple[KeyShare, PublicKeyPackage]:
    """Verify each received share against its sender's commitment and sum them into a key share."""
    _check_round1(secret, round1_packages)
    me = secret.identifier
    if set(round2_packages) != set(round1_packages):
        missing = sorted(set(round1_packages) ^ set(round2_packages))
        raise InvalidParameters(f"round-two packages do not match round one for {missing}")
    total: int = polynomial_evaluate(me, secret.coefficients)
    for sender, received in sorted(round2_packages.items()):
        if received.sender != sender or received.recipient != me:
            raise CheatingParticipant(
                sender,
                f"round-two package is addressed {received.sender}->{received.recipient}, "
                f"expected {sender}->{me}",
            )
        if not vss_verify(me, received.share, round1_packages[sender].commitment):
            raise CheatingParticipant(sender, "secret share does not match its commitment")
        total += received.share
    commitments = [
        vss_commit(secret.coefficients),
        *(p.commitment for _, p in sorted(round1_packages.items())),
    ]
    group_commitment = sum_commitments(commitments)
    identifiers = sorted([me, *round1_packages])
    package = derive_public_key_package(group_commitment, identifiers)
    key_share = KeyShare(
        me,
        Scalar(total % ORDER),
        package.group_public_key,
        secret.min_participants,
        secret.max_participants,
    )
    if key_share.verifying_share != package.verifying_shares[me]:
        raise CheatingParticipant(me, "own share does not match the group commitment")
    return key_share, package


def sum_commitments(commitments: Sequence[Sequence[Element]]) -> list[Element]:
    """Coefficient-wise sum: the commitment to the sum of the polynomials."""
    return [element_sum(column) for column in zip(*commitments, strict=True)]


def _check_round1(secret: Round1Secret, round1_packages: Mapping[int, Round1Package]) -> None:
    others = sorted(round1_packages)
    validate_identifiers([secret.identifier, *others])
    if len(others) != secret.max_participants - 1:
        raise InvalidParameters(
            f"expected round-one packages from {secret.max_participants - 1} other participants, "
            f"got {len(others)}"
        )
    for j in others:
        package = round1_packages[j]
        if package.identifier != j:
            raise CheatingParticipant(
                j, f"round-one package claims identifier {package.identifier}"
            )
        if len(package.commitment) != secret.min_participants:
            raise CheatingParticipant(
                j, f"commitment has {len(package.commitment)} terms, not {secret.min_participants}"
            )
        if not verify_proof_of_knowledge(package):
            raise CheatingParticipant(j, "proof of knowledge of the secret does not verify")
