"""RFC 9591 Appendix E.1 and ZcashFoundation's vectors, replayed value for value."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from signer.frost import InvalidElement, aggregate, sign, verify
from signer.frost.group import deserialize_element, deserialize_scalar
from signer.frost.keys import shares_from_polynomial
from signer.frost.signing import (
    binding_factor_inputs,
    commit,
    compute_binding_factors,
    verify_signature_share,
)
from tests.conftest import VECTORS

SIGNING_VECTORS = ["frost-ed25519-sha512.json", "vectors.json", "vectors-big-identifier.json"]


def load(name: str) -> dict[str, Any]:
    return json.loads((VECTORS / "frost" / name).read_text())


def scalar(hex_value: str) -> int:
    return deserialize_scalar(bytes.fromhex(hex_value))


def replay(*chunks: bytes) -> Iterator[bytes]:
    yield from chunks


@pytest.mark.parametrize("name", SIGNING_VECTORS)
def test_signing_vector(name: str) -> None:
    vector = load(name)
    inputs = vector["inputs"]
    config = vector["config"]
    group_public_key = inputs.get("group_public_key") or inputs["verifying_key_key"]
    msg = bytes.fromhex(inputs["message"])
    max_participants = int(config["MAX_PARTICIPANTS"])

    # Trusted dealer: the shares and group key come out of the polynomial exactly.
    coefficients = [scalar(c) for c in inputs["share_polynomial_coefficients"]]
    shares, package, _ = shares_from_polynomial(
        scalar(inputs["group_secret_key"]), coefficients, max_participants
    )
    assert package.group_public_key.hex() == group_public_key
    by_id = {s.identifier: s for s in shares}
    for expected in inputs["participant_shares"]:
        share = by_id[expected["identifier"]]
        assert share.signing_share == scalar(expected["participant_share"])

    # Round one: nonces from the recorded randomness, then commitments.
    nonces = {}
    for out in vector["round_one_outputs"]["outputs"]:
        identifier = out["identifier"]
        chunks = replay(
            bytes.fromhex(out["hiding_nonce_randomness"]),
            bytes.fromhex(out["binding_nonce_randomness"]),
        )
        n = commit(by_id[identifier], rng=lambda _size, chunks=chunks: next(chunks))
        assert n.hiding == scalar(out["hiding_nonce"])
        assert n.binding == scalar(out["binding_nonce"])
        assert n.commitment.hiding.hex() == out["hiding_nonce_commitment"]
        assert n.commitment.binding.hex() == out["binding_nonce_commitment"]
        nonces[identifier] = n
    commitment_list = [nonces[i].commitment for i in sorted(nonces)]
    assert sorted(nonces) == inputs["participant_list"]

    gpk = package.group_public_key
    rho_inputs = binding_factor_inputs(gpk, commitment_list, msg)
    rhos = compute_binding_factors(gpk, commitment_list, msg)
    for out in vector["round_one_outputs"]["outputs"]:
        assert rho_inputs[out["identifier"]].hex() == out["binding_factor_input"]
        assert rhos[out["identifier"]] == scalar(out["binding_factor"])

    # Round two: each share, checked by verify_signature_share too.
    sig_shares = []
    for out in vector["round_two_outputs"]["outputs"]:
        identifier = out["identifier"]
        share = sign(by_id[identifier], nonces[identifier], msg, commitment_list)
        assert share.share == scalar(out["sig_share"])
        assert verify_signature_share(
            identifier,
            package.verifying_shares[identifier],
            nonces[identifier].commitment,
            share.share,
            commitment_list,
            gpk,
            msg,
        )
        sig_shares.append(share)

    signature = aggregate(commitment_list, msg, package, sig_shares)
    assert signature.hex() == vector["final_output"]["sig"]
    assert verify(gpk, msg, signature)
    Ed25519PublicKey.from_public_bytes(gpk).verify(signature, msg)


def test_invalid_element_is_rejected() -> None:
    for name, hex_value in load("elements.json")["elements"].items():
        with pytest.raises(InvalidElement):
            deserialize_element(bytes.fromhex(hex_value))
        assert name == "invalid_element"
