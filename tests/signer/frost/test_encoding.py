"""Versioned encodings round-trip, and every corruption is refused with a reason."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from signer.frost import EncodingError, SignatureShare, commit, trusted_dealer_keygen
from signer.frost.encoding import (
    Kind,
    commitment_key,
    decode_commitment_list,
    decode_key_share,
    decode_public_key_package,
    decode_signature_share,
    decode_signing_commitment,
    encode_commitment_list,
    encode_key_share,
    encode_public_key_package,
    encode_signature_share,
    encode_signing_commitment,
)
from signer.frost.group import Scalar

SHARES, PACKAGE, _ = trusted_dealer_keygen(3, 5)
NONCES = [commit(s) for s in SHARES[:3]]
COMMITMENTS = [n.commitment for n in NONCES]
OBJECTS: list[tuple[Any, Callable[[Any], bytes], Callable[[bytes], Any]]] = [
    (SHARES[0], encode_key_share, decode_key_share),
    (PACKAGE, encode_public_key_package, decode_public_key_package),
    (COMMITMENTS[0], encode_signing_commitment, decode_signing_commitment),
    (COMMITMENTS, encode_commitment_list, decode_commitment_list),
    (SignatureShare(2, Scalar(12345)), encode_signature_share, decode_signature_share),
]


@pytest.mark.parametrize(("value", "encode", "decode"), OBJECTS)
def test_round_trip(
    value: Any, encode: Callable[[Any], bytes], decode: Callable[[bytes], Any]
) -> None:
    assert decode(encode(value)) == value


@pytest.mark.parametrize(("value", "encode", "decode"), OBJECTS)
def test_corruptions_are_refused(
    value: Any, encode: Callable[[Any], bytes], decode: Callable[[bytes], Any]
) -> None:
    data = encode(value)
    cases = {
        "not a keymint": b"XYZ" + data[3:],
        "version": data[:3] + b"\x09" + data[4:],
        "expected a": data[:4] + bytes([(data[4] % len(Kind)) + 1]) + data[5:],
        "ciphersuite": data[:7] + b"X" + data[8:],
        "truncated": data[:-1],
        "trailing": data + b"\x00",
    }
    for reason, corrupted in cases.items():
        with pytest.raises(EncodingError, match=reason):
            decode(corrupted)


def test_invalid_element_inside_an_encoding_is_refused() -> None:
    data = bytearray(encode_signing_commitment(COMMITMENTS[0]))
    data[-32:] = b"\x01" + b"\x00" * 31  # the identity as the binding commitment
    with pytest.raises(EncodingError, match="element"):
        decode_signing_commitment(bytes(data))


def test_zero_identifier_in_a_key_share_is_refused() -> None:
    data = bytearray(encode_key_share(SHARES[0]))
    header = len(data) - (32 + 32 + 32 + 4)
    data[header : header + 32] = bytes(32)
    with pytest.raises(EncodingError, match="identifier"):
        decode_key_share(bytes(data))


def test_known_commitment_short_cut_still_decodes_the_others() -> None:
    data = encode_commitment_list(COMMITMENTS)
    known = {commitment_key(COMMITMENTS[1]): COMMITMENTS[1]}
    assert decode_commitment_list(data, known=known) == COMMITMENTS
