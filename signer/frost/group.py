"""The prime-order group of RFC 9591 section 6.5: Ed25519 with SHA-512.

Scalars are Python ints in [0, L); elements are their canonical 32-byte encodings, which libsodium
operates on directly. An `Element` is only ever made by `deserialize_element` or by arithmetic on
elements, so holding one means it was validated.

libsodium's variable-base scalar multiplication re-checks its input (on the curve, canonical, in the
prime-order subgroup) and costs about four times a base multiplication; callers that know a discrete
logarithm should use `scalar_base_mult` instead (see `signing.compute_group_commitment`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NewType

from nacl import bindings as _sodium
from nacl.exceptions import RuntimeError as _SodiumRuntimeError

from signer.frost.errors import InvalidElement, InvalidScalar

Scalar = NewType("Scalar", int)
Element = NewType("Element", bytes)
RandomBytes = Callable[[int], bytes]
"""Source of randomness: `n -> n uniformly random bytes`. Injectable so tests can replay vectors."""

ORDER = 2**252 + 27742317777372353535851937790883648493
"""L, the order of the prime-order subgroup."""

SCALAR_SIZE = 32
ELEMENT_SIZE = 32

IDENTITY = Element(b"\x01" + b"\x00" * 31)


def serialize_scalar(s: int) -> bytes:
    """SerializeScalar: 32 bytes, little-endian."""
    return s.to_bytes(SCALAR_SIZE, "little")


def deserialize_scalar(buf: bytes) -> Scalar:
    """DeserializeScalar: refuses any encoding that is not 32 bytes or not below L."""
    if len(buf) != SCALAR_SIZE:
        raise InvalidScalar(f"scalar must be {SCALAR_SIZE} bytes, got {len(buf)}")
    s = int.from_bytes(buf, "little")
    if s >= ORDER:
        raise InvalidScalar("scalar is not below the group order L")
    return Scalar(s)


def serialize_element(element: Element) -> bytes:
    """SerializeElement: the canonical compressed encoding, refusing the identity (RFC 9591 6.5)."""
    if element == IDENTITY:
        raise InvalidElement("cannot serialize the identity element")
    return bytes(element)


def deserialize_element(buf: bytes) -> Element:
    """DeserializeElement: canonical, on the curve, not the identity, in the prime-order subgroup.

    libsodium's is_valid_point performs all four checks (the subgroup one by multiplying by L).
    """
    if len(buf) != ELEMENT_SIZE:
        raise InvalidElement(f"element must be {ELEMENT_SIZE} bytes, got {len(buf)}")
    if not _sodium.crypto_core_ed25519_is_valid_point(bytes(buf)):
        raise InvalidElement(
            "element is not a canonical point of the prime-order subgroup, or is of small order"
        )
    return Element(bytes(buf))


def scalar_base_mult(s: int) -> Element:
    """ScalarBaseMult: [s]B. Zero gives the identity, which libsodium reports as an error."""
    s %= ORDER
    if s == 0:
        return IDENTITY
    return Element(_sodium.crypto_scalarmult_ed25519_base_noclamp(serialize_scalar(s)))


def scalar_mult(s: int, element: Element) -> Element:
    """[s]P for a validated element P (not clamped: FROST's scalars are full-width)."""
    s %= ORDER
    if s == 0 or element == IDENTITY:
        return IDENTITY
    try:
        return Element(_sodium.crypto_scalarmult_ed25519_noclamp(serialize_scalar(s), element))
    except _SodiumRuntimeError:
        # libsodium refuses to return the identity; for a prime-order P that means s = 0 mod L,
        # which was handled above, so P itself was not a valid element.
        raise InvalidElement("scalar multiplication by an element outside the group") from None


def element_add(a: Element, b: Element) -> Element:
    if a == IDENTITY:
        return b
    if b == IDENTITY:
        return a
    return Element(_sodium.crypto_core_ed25519_add(a, b))


def element_sum(elements: Iterable[Element]) -> Element:
    total = IDENTITY
    for e in elements:
        total = element_add(total, e)
    return total


def random_scalar(rng: RandomBytes) -> Scalar:
    """A uniform non-zero scalar: 64 random bytes reduced mod L (bias below 2^-250)."""
    while True:
        s = int.from_bytes(rng(64), "little") % ORDER
        if s != 0:
            return Scalar(s)
