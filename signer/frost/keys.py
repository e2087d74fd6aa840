"""Key material and the trusted dealer of RFC 9591 Appendix C.

A `KeyShare` is what one signer holds. A `PublicKeyPackage` is what everyone may know: the group
public key, each participant's verifying share, and the threshold.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from signer.frost.errors import InvalidParameters
from signer.frost.group import (
    ORDER,
    Element,
    RandomBytes,
    Scalar,
    random_scalar,
    scalar_base_mult,
)
from signer.frost.polynomial import (
    evaluate_commitment,
    polynomial_evaluate,
    validate_identifiers,
    vss_commit,
)


def validate_threshold(min_participants: int, max_participants: int) -> None:
    """2 <= MIN <= MAX < L: a one-of-n "threshold" would be a single key with extra steps."""
    if not 2 <= min_participants <= max_participants < ORDER:
        raise InvalidParameters(
            f"threshold {min_participants}-of-{max_participants} is invalid: "
            "need 2 <= MIN_PARTICIPANTS <= MAX_PARTICIPANTS"
        )


@dataclass(frozen=True, slots=True)
class PublicKeyPackage:
    """The public side of a key: group key, verifying share per identifier, and the threshold."""

    group_public_key: Element
    verifying_shares: Mapping[int, Element]
    min_participants: int

    def __post_init__(self) -> None:
        validate_identifiers(list(self.verifying_shares))
        validate_threshold(self.min_participants, len(self.verifying_shares))

    @property
    def identifiers(self) -> list[int]:
        return sorted(self.verifying_shares)


@dataclass(frozen=True, slots=True)
class KeyShare:
    """One participant's secret share sk_i with the public facts it signs under."""

    identifier: int
    signing_share: Scalar = field(repr=False)
    group_public_key: Element
    min_participants: int
    max_participants: int
    verifying_share: Element = field(init=False)

    def __post_init__(self) -> None:
        validate_identifiers([self.identifier])
        if not 0 < self.signing_share < ORDER:
            raise InvalidParameters("signing share must be a non-zero scalar")
        validate_threshold(self.min_participants, self.max_participants)
        object.__setattr__(self, "verifying_share", scalar_base_mult(self.signing_share))


def secret_share_shard(
    secret: int, coefficients: Sequence[int], identifiers: Sequence[int]
) -> dict[int, Scalar]:
    """Appendix C.1, generalised to any identifiers: f(x_i) for f = secret + sum a_j x^j."""
    validate_identifiers(identifiers)
    polynomial = [secret, *coefficients]
    return {x: polynomial_evaluate(x, polynomial) for x in identifiers}


def trusted_dealer_keygen(
    min_participants: int,
    max_participants: int,
    *,
    secret_key: int | None = None,
    rng: RandomBytes = os.urandom,
) -> tuple[list[KeyShare], PublicKeyPackage, list[Element]]:
    """Appendix C: one machine makes every share. For development; production keys come from DKG.

    Returns the shares for identifiers 1..MAX, the public key package, and the VSS commitment that
    each participant checks its share against with `vss_verify`.
    """
    validate_threshold(min_participants, max_participants)
    secret = random_scalar(rng) if secret_key is None else secret_key
    if not 0 < secret < ORDER:
        raise InvalidParameters("group secret key must be a non-zero scalar")
    coefficients = [random_scalar(rng) for _ in range(min_participants - 1)]
    return shares_from_polynomial(secret, coefficients, max_participants)


def shares_from_polynomial(
    secret: int, coefficients: Sequence[int], max_participants: int
) -> tuple[list[KeyShare], PublicKeyPackage, list[Element]]:
    """The deterministic half of the trusted dealer, used directly to replay the RFC vectors."""
    min_participants = len(coefficients) + 1
    validate_threshold(min_participants, max_participants)
    identifiers = list(range(1, max_participants + 1))
    commitment = vss_commit([secret, *coefficients])
    group_public_key = commitment[0]
    shares = secret_share_shard(secret, coefficients, identifiers)
    key_shares = [
        KeyShare(x, shares[x], group_public_key, min_participants, max_participants)
        for x in identifiers
    ]
    package = derive_public_key_package(commitment, identifiers)
    return key_shares, package, commitment


def derive_public_key_package(
    commitment: Sequence[Element], identifiers: Sequence[int]
) -> PublicKeyPackage:
    """Appendix C.2 derive_group_info: the group key C_0 and PK_i = [f(i)]B for each i."""
    verifying_shares = {x: evaluate_commitment(x, commitment) for x in identifiers}
    return PublicKeyPackage(commitment[0], verifying_shares, len(commitment))
