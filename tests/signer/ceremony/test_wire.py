"""Encodings of what participants broadcast, and the ceremony parameters they agree on."""

from __future__ import annotations

import pytest

from signer.ceremony.errors import CeremonyError
from signer.ceremony.wire import (
    CeremonyKind,
    CeremonyParameters,
    decode_round1_package,
    decode_vss_commitment,
    encode_round1_package,
    encode_vss_commitment,
)
from signer.frost import EncodingError, dkg, trusted_dealer_keygen


def test_round1_package_round_trips() -> None:
    _, package = dkg.part1(3, 2, 3)
    encoded = encode_round1_package(package)
    assert decode_round1_package(encoded) == package


def test_round1_package_refuses_a_point_outside_the_group() -> None:
    _, package = dkg.part1(1, 2, 3)
    encoded = bytearray(encode_round1_package(package))
    # The first commitment element starts after the header, the identifier and the count.
    start = len(encoded) - 2 * 32 - 32 - 32 - 32
    encoded[start : start + 32] = b"\xff" * 32
    with pytest.raises(EncodingError):
        decode_round1_package(bytes(encoded))


def test_encodings_refuse_each_other_and_trailing_bytes() -> None:
    _, package = dkg.part1(1, 2, 3)
    commitment = encode_vss_commitment(package.commitment)
    assert decode_vss_commitment(commitment) == package.commitment
    with pytest.raises(EncodingError):
        decode_round1_package(commitment)
    with pytest.raises(EncodingError):
        decode_vss_commitment(encode_round1_package(package))
    with pytest.raises(EncodingError):
        decode_vss_commitment(commitment + b"\x00")
    with pytest.raises(EncodingError):
        decode_vss_commitment(commitment[:-1])


def _params(**overrides: object) -> CeremonyParameters:
    fields: dict[str, object] = {
        "ceremony_id": bytes(16),
        "kind": CeremonyKind.DKG,
        "min_participants": 2,
        "dealers": (1, 2, 3),
        "recipients": (1, 2, 3),
    }
    fields.update(overrides)
    return CeremonyParameters(**fields)  # type: ignore[arg-type]


def test_parameters_round_trip() -> None:
    _, package, _ = trusted_dealer_keygen(2, 3)
    params = _params(
        kind=CeremonyKind.RESHARE, dealers=(1, 3), recipients=(1, 2, 3, 4, 5), old_package=package
    )
    assert CeremonyParameters.decode(params.encode()) == params
    assert params.participants == (1, 2, 3, 4, 5)


@pytest.mark.parametrize(
    "overrides",
    [
        {"ceremony_id": b"short"},
        {"min_participants": 1},
        {"min_participants": 4},
        {"dealers": (1, 2)},  # a DKG where someone only receives
        {"recipients": (3, 2, 1), "dealers": (3, 2, 1)},
        {"kind": CeremonyKind.DEAL},  # a dealer install where signers deal
        {"kind": CeremonyKind.RESHARE},  # a reshare without the key being reshared
    ],
)
def test_parameters_are_checked_when_made(overrides: dict[str, object]) -> None:
    with pytest.raises(CeremonyError):
        _params(**overrides)


def test_reshare_needs_enough_dealers_holding_the_key() -> None:
    _, package, _ = trusted_dealer_keygen(2, 3)
    with pytest.raises(CeremonyError, match="fewer than the current threshold"):
        _params(kind=CeremonyKind.RESHARE, dealers=(1,), old_package=package)
    with pytest.raises(CeremonyError, match="hold no share"):
        _params(kind=CeremonyKind.RESHARE, dealers=(1, 4), old_package=package)


def test_unreadable_parameters_are_refused() -> None:
    with pytest.raises(CeremonyError):
        CeremonyParameters.decode(b"\xff\xff\xff")
