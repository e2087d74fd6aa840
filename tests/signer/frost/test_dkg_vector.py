"""ZcashFoundation's DKG vector: commitments, proofs of knowledge, shares and the group key."""

from __future__ import annotations

import json
from typing import Any

import pytest

from signer.frost import CheatingParticipant
from signer.frost.dkg import (
    ProofOfKnowledge,
    Round1Package,
    Round1Secret,
    Round2Package,
    part2,
    part3,
    verify_proof_of_knowledge,
)
from signer.frost.group import Scalar, deserialize_element, deserialize_scalar, scalar_base_mult
from signer.frost.polynomial import vss_commit
from tests.conftest import VECTORS


def load() -> dict[str, Any]:
    return json.loads((VECTORS / "frost" / "vectors_dkg.json").read_text())


def scalar(hex_value: str) -> Scalar:
    return deserialize_scalar(bytes.fromhex(hex_value))


def participants(vector: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {int(k): v for k, v in vector["inputs"].items() if k.isdigit()}


def round1(vector: dict[str, Any]) -> tuple[dict[int, Round1Secret], dict[int, Round1Package]]:
    config = vector["config"]
    secrets, packages = {}, {}
    for identifier, p in participants(vector).items():
        coefficients = (scalar(p["signing_key"]), scalar(p["coefficient"]))
        commitment = tuple(deserialize_element(bytes.fromhex(c)) for c in p["vss_commitments"])
        assert list(commitment) == vss_commit(coefficients)
        proof = bytes.fromhex(p["proof_of_knowledge"])
        packages[identifier] = Round1Package(
            identifier,
            commitment,
            ProofOfKnowledge(deserialize_element(proof[:32]), deserialize_scalar(proof[32:])),
        )
        secrets[identifier] = Round1Secret(
            identifier, coefficients, config["MIN_PARTICIPANTS"], config["MAX_PARTICIPANTS"]
        )
    return secrets, packages


def test_dkg_vector_reproduced() -> None:
    vector = load()
    secrets, packages = round1(vector)
    for package in packages.values():
        assert verify_proof_of_knowledge(package)

    sent = {i: part2(secrets[i], {j: p for j, p in packages.items() if j != i}) for i in secrets}
    for identifier, p in participants(vector).items():
        for sender, share_hex in p["signing_shares"].items():
            assert sent[int(sender)][identifier].share == scalar(share_hex)

    for identifier, p in participants(vector).items():
        received = {j: sent[j][identifier] for j in sent if j != identifier}
        others = {j: pk for j, pk in packages.items() if j != identifier}
        key_share, public = part3(secrets[identifier], others, received)
        assert key_share.signing_share == scalar(p["signing_share"])
        assert key_share.verifying_share.hex() == p["verifying_share"]
        assert public.group_public_key.hex() == vector["inputs"]["verifying_key"]
        assert scalar_base_mult(key_share.signing_share) == public.verifying_shares[identifier]


def test_dkg_vector_bad_proof_names_sender() -> None:
    vector = load()
    secrets, packages = round1(vector)
    forged = packages[2]
    packages[2] = Round1Package(
        2,
        forged.commitment,
        ProofOfKnowledge(forged.proof.commitment, Scalar(forged.proof.response + 1)),
    )
    with pytest.raises(CheatingParticipant) as caught:
        part2(secrets[1], {j: p for j, p in packages.items() if j != 1})
    assert caught.value.identifier == 2


def test_dkg_vector_bad_share_names_sender() -> None:
    vector = load()
    secrets, packages = round1(vector)
    sent = {i: part2(secrets[i], {j: p for j, p in packages.items() if j != i}) for i in secrets}
    received = {j: sent[j][1] for j in (2, 3)}
    received[3] = Round2Package(3, 1, Scalar(received[3].share + 1))
    with pytest.raises(CheatingParticipant) as caught:
        part3(secrets[1], {j: packages[j] for j in (2, 3)}, received)
    assert caught.value.identifier == 3
