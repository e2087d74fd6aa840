"""Polynomials over the scalar field: RFC 9591 section 4.2 and Appendix C.

A polynomial is a list of coefficients, constant term first. A VSS commitment is the list of
[a_j]B for those coefficients: anyone can check a share against it without learning the secret.
"""

from __future__ import annotations

from collections.abc import Sequence

from signer.frost.errors import InvalidIdentifier
from signer.frost.group import ORDER, Element, Scalar, element_sum, scalar_base_mult, scalar_mult


def validate_identifiers(identifiers: Sequence[int]) -> None:
    """Identifiers are non-zero scalars, each present once."""
    seen: set[int] = set()
    for x in identifiers:
        if not 0 < x < ORDER:
            raise InvalidIdentifier(f"identifier {x} is not a non-zero scalar")
        if x in seen:
            raise InvalidIdentifier(f"identifier {x} appears more than once")
        seen.add(x)


def derive_interpolating_value(x_coords: Sequence[int], x_i: int) -> Scalar:
    """Section 4.2: the Lagrange coefficient of x_i for interpolating at zero over x_coords."""
    if x_i not in x_coords:
        raise InvalidIdentifier(f"identifier {x_i} is not among the participants")
    validate_identifiers(x_coords)
    numerator = 1
    denominator = 1
    for x_j in x_coords:
        if x_j == x_i:
            continue
        numerator = numerator * x_j % ORDER
        denominator = denominator * (x_j - x_i) % ORDER
    return Scalar(numerator * pow(denominator, -1, ORDER) % ORDER)


def polynomial_evaluate(x: int, coefficients: Sequence[int]) -> Scalar:
    """Appendix C.1: Horner's rule, constant term first."""
    value = 0
    for coefficient in reversed(coefficients):
        value = (value * x + coefficient) % ORDER
    return Scalar(value)


def vss_commit(coefficients: Sequence[int]) -> list[Element]:
    """Appendix C.2: [a_j]B for each coefficient."""
    return [scalar_base_mult(a) for a in coefficients]


def evaluate_commitment(x: int, commitment: Sequence[Element]) -> Element:
    """The public image of the polynomial at x: sum_j [x^j]C_j, which equals [f(x)]B."""
    terms = []
    power = 1
    for c in commitment:
        terms.append(scalar_mult(power, c))
        power = power * x % ORDER
    return element_sum(terms)


def vss_verify(identifier: int, share: int, commitment: Sequence[Element]) -> bool:
    """Appendix C.2: does the share f(identifier) match the commitment to f?"""
    return scalar_base_mult(share) == evaluate_commitment(identifier, commitment)
