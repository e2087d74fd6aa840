"""Input validation RFC 9591 demands, each refusal naming what was wrong."""

from __future__ import annotations

import pytest

from signer.frost import (
    InvalidCommitmentList,
    InvalidElement,
    InvalidIdentifier,
    InvalidParameters,
    InvalidScalar,
    KeyShare,
    SigningCommitment,
    commit,
    sign,
    trusted_dealer_keygen,
)
from signer.frost.group import (
    IDENTITY,
    ORDER,
    deserialize_element,
    deserialize_scalar,
    scalar_base_mult,
    serialize_scalar,
)
from signer.frost.polynomial import derive_interpolating_value

# A point of order 8 (from libsodium's small-order blocklist) and a mixed-order point.
SMALL_ORDER = bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a")
NON_CANONICAL = bytes.fromhex("edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f")


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (serialize_scalar(ORDER), "not below the group order"),
        (serialize_scalar(ORDER + 5)[:32], "not below the group order"),
        (b"\x01" * 31, "must be 32 bytes"),
    ],
)
def test_scalars_at_or_above_the_order_are_refused(value: bytes, why: str) -> None:
    with pytest.raises(InvalidScalar, match=why):
        deserialize_scalar(value)


def test_mixed_order_point_is_refused() -> None:
    from nacl.bindings import crypto_core_ed25519_add

    mixed = crypto_core_ed25519_add(scalar_base_mult(7), SMALL_ORDER)
    with pytest.raises(InvalidElement):
        deserialize_element(mixed)


@pytest.mark.parametrize("value", [bytes(IDENTITY), SMALL_ORDER, NON_CANONICAL, b"\x00" * 31])
def test_bad_elements_are_refused(value: bytes) -> None:
    with pytest.raises(InvalidElement):
        deserialize_element(value)


def test_identifiers_must_be_nonzero_and_distinct() -> None:
    with pytest.raises(InvalidIdentifier, match="not a non-zero scalar"):
        derive_interpolating_value([0, 1], 1)
    with pytest.raises(InvalidIdentifier, match="more than once"):
        derive_interpolating_value([1, 2, 2], 1)
    with pytest.raises(InvalidIdentifier, match="not among"):
        derive_interpolating_value([1, 2], 3)


@pytest.mark.parametrize(("t", "n"), [(1, 3), (4, 3), (0, 0)])
def test_thresholds_outside_min_max_are_refused(t: int, n: int) -> None:
    with pytest.raises(InvalidParameters, match=f"{t}-of-{n}"):
        trusted_dealer_keygen(t, n)


@pytest.fixture
def three() -> list[KeyShare]:
    return trusted_dealer_keygen(2, 3)[0]


def test_signer_refuses_a_list_without_its_own_commitment(three: list[KeyShare]) -> None:
    mine, theirs, other = (commit(s) for s in three)
    with pytest.raises(InvalidCommitmentList, match="own commitment is missing"):
        sign(three[0], mine, b"m", [theirs.commitment, other.commitment])


def test_signer_refuses_a_substituted_own_commitment(three: list[KeyShare]) -> None:
    mine, theirs = commit(three[0]), commit(three[1])
    forged = SigningCommitment(1, theirs.commitment.hiding, mine.commitment.binding)
    with pytest.raises(InvalidCommitmentList, match="own commitment is missing"):
        sign(three[0], mine, b"m", [forged, theirs.commitment])


def test_signer_refuses_unsorted_or_repeated_lists(three: list[KeyShare]) -> None:
    mine, theirs = commit(three[0]), commit(three[1])
    with pytest.raises(InvalidCommitmentList, match="sorted"):
        sign(three[0], mine, b"m", [theirs.commitment, mine.commitment])
    with pytest.raises(InvalidCommitmentList, match="sorted"):
        sign(three[0], mine, b"m", [mine.commitment, mine.commitment])


def test_signer_refuses_too_few_or_too_many(three: list[KeyShare]) -> None:
    nonces = [commit(s) for s in three]
    with pytest.raises(InvalidCommitmentList, match="need between 2 and 3"):
        sign(three[0], nonces[0], b"m", [nonces[0].commitment])
    extra = SigningCommitment(4, nonces[2].commitment.hiding, nonces[2].commitment.binding)
    with pytest.raises(InvalidCommitmentList, match="need between 2 and 3"):
        sign(three[0], nonces[0], b"m", [n.commitment for n in nonces] + [extra])


def test_nonces_of_another_participant_are_refused(three: list[KeyShare]) -> None:
    mine, theirs = commit(three[0]), commit(three[1])
    with pytest.raises(InvalidCommitmentList, match="belong to participant 2"):
        sign(three[0], theirs, b"m", [mine.commitment, theirs.commitment])


def test_key_share_repr_hides_the_secret(three: list[KeyShare]) -> None:
    share = three[0]
    assert str(share.signing_share) not in repr(share)
    assert hex(share.signing_share)[2:] not in repr(share)
    assert "signing_share" not in repr(share)
