"""Resharing and refresh: new shares, new threshold or new participants, the same group key.

Any t_old holders of the current key (the dealers) each re-share their Lagrange-weighted share
lambda_i * s_i with a fresh polynomial of degree t_new - 1. The constant term of dealer i's
commitment must equal [lambda_i]PK_i, its verifying share weighted the same way, which every
recipient checks from public data, so a dealer cannot shift the group key. Recipients sum what they
receive. Old and new shares lie on different polynomials and never combine.

Refresh is the special case of resharing onto the same participants with the same threshold: every
share changes, the group key and the participant set do not.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from signer.frost.dkg import sum_commitments
from signer.frost.errors import CheatingParticipant, InvalidParameters
from signer.frost.group import (
    ORDER,
    Element,
    RandomBytes,
    Scalar,
    random_scalar,
    scalar_mult,
)
from signer.frost.keys import (
    KeyShare,
    PublicKeyPackage,
    derive_public_key_package,
    validate_threshold,
)
from signer.frost.polynomial import (
    derive_interpolating_value,
    polynomial_evaluate,
    validate_identifiers,
    vss_commit,
    vss_verify,
)


@dataclass(frozen=True, slots=True)
class ReshareDealing:
    """One dealer's contribution: a public commitment and a private share for each recipient."""

    dealer: int
    commitment: tuple[Element, ...]
    shares: Mapping[int, Scalar] = field(repr=False)


@dataclass(frozen=True, slots=True)
class ResharePlan:
    """Who deals, who receives, and the new threshold. Every participant must agree on it."""

    dealers: tuple[int, ...]
    recipients: tuple[int, ...]
    min_participants: int

    def __post_init__(self) -> None:
        validate_identifiers(self.dealers)
        validate_identifiers(self.recipients)
        validate_threshold(self.min_participants, len(self.recipients))


def deal(
    key_share: KeyShare, plan: ResharePlan, *, rng: RandomBytes = os.urandom
) -> ReshareDealing:
    if key_share.identifier not in plan.dealers:
        raise InvalidParameters(f"participant {key_share.identifier} is not a dealer in this plan")
    if len(plan.dealers) < key_share.min_participants:
        raise InvalidParameters(
            f"{len(plan.dealers)} dealers cannot reconstruct a "
            f"{key_share.min_participants}-of-{key_share.max_participants} key"
        )
    lambda_i = derive_interpolating_value(plan.dealers, key_share.identifier)
    constant = lambda_i * key_share.signing_share % ORDER
    coefficients = [constant] + [random_scalar(rng) for _ in range(plan.min_participants - 1)]
    shares = {x: polynomial_evaluate(x, coefficients) for x in plan.recipients}
    return ReshareDealing(key_share.identifier, tuple(vss_commit(coefficients)), shares)


def receive(
    identifier: int,
    plan: ResharePlan,
    old_package: PublicKeyPackage,
    dealings: Mapping[int, tuple[Sequence[Element], Scalar]],
) -> tuple[KeyShare, PublicKeyPackage]:
    """Check each dealer's commitment and share, and sum them into this recipient's new share.

    `dealings` maps dealer -> (its public commitment, the share it sent this recipient).
    """
    if identifier not in plan.recipients:
        raise InvalidParameters(f"participant {identifier} is not a recipient in this plan")
    if sorted(dealings) != sorted(plan.dealers):
        raise InvalidParameters(
            f"dealings from {sorted(dealings)} do not match the plan's dealers {list(plan.dealers)}"
        )
    unknown = [d for d in plan.dealers if d not in old_package.verifying_shares]
    if unknown:
        raise InvalidParameters(f"dealers {unknown} hold no share of the current key")
    if len(plan.dealers) < old_package.min_participants:
        raise InvalidParameters(
            f"{len(plan.dealers)} dealers are fewer than the current threshold "
            f"{old_package.min_participants}"
        )
    total = 0
    for dealer, (commitment, share) in sorted(dealings.items()):
        if len(commitment) != plan.min_participants:
            raise CheatingParticipant(
                dealer, f"commitment has {len(commitment)} terms, not {plan.min_participants}"
            )
        lambda_d = derive_interpolating_value(plan.dealers, dealer)
        if commitment[0] != scalar_mult(lambda_d, old_package.verifying_shares[dealer]):
            raise CheatingParticipant(dealer, "constant term is not its share of the group key")
        if not vss_verify(identifier, share, commitment):
            raise CheatingParticipant(dealer, "secret share does not match its commitment")
        total += share
    group_commitment = sum_commitments([c for c, _ in dealings.values()])
    package = derive_public_key_package(group_commitment, plan.recipients)
    if package.group_public_key != old_package.group_public_key:
        raise CheatingParticipant(identifier, "reshared key differs from the group key")
    key_share = KeyShare(
        identifier,
        Scalar(total % ORDER),
        package.group_public_key,
        plan.min_participants,
        len(plan.recipients),
    )
    return key_share, package


def refresh_plan(package: PublicKeyPackage) -> ResharePlan:
    """Refresh: every current participant deals and receives; the threshold stays."""
    identifiers = tuple(package.identifiers)
    return ResharePlan(identifiers, identifiers, package.min_participants)
