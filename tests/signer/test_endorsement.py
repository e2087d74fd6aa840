"""Endorsement chains from a pinned root: what `verify_chain` trusts, and each way a chain breaks.

`vectors/endorsement_chain.json` pins the encoding: a valid chain of 3 from fixed Ed25519 seeds
(deterministic signatures), rebuilt here byte for byte.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from signer.endorsement import (
    EndorsementError,
    EndorsementFormatError,
    TrustRoot,
    endorsement_message,
    key_jwk,
    public_key_from_jwk,
    read_endorsement,
    verify_chain,
)
from signer.token import b64url, compact, kid_for

VECTORS = json.loads((Path(__file__).parent / "vectors" / "endorsement_chain.json").read_text())
ISSUER = VECTORS["issuer"]
DAY = 86_400
IAT = 1_900_000_000


class Key:
    def __init__(self, seed: int) -> None:
        self.private = Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)
        self.public = self.private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def endorse(self, other: Key, *, issuer: str = ISSUER, iat: int = IAT) -> str:
        message = endorsement_message(self.public, other.public, issuer=issuer, issued_at=iat)
        return compact(message, self.private.sign(message))

    def sign_raw(self, header: dict[str, Any], payload: dict[str, Any]) -> str:
        text = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
        return f"{text}.{b64url(self.private.sign(text.encode()))}"


K0, K1, K2, K3 = (Key(seed) for seed in (1, 2, 3, 4))
ROOT = TrustRoot(ISSUER, (K0.public,))


def valid_chain() -> list[str]:
    return [
        K0.endorse(K1, iat=IAT),
        K1.endorse(K2, iat=IAT + DAY),
        K2.endorse(K3, iat=IAT + 2 * DAY),
    ]


def test_the_vector_chain_is_rebuilt_byte_for_byte_and_trusts_four_keys() -> None:
    assert TrustRoot.from_document(VECTORS["root"]) == ROOT
    assert valid_chain() == VECTORS["chain"]
    trusted = verify_chain(ROOT, VECTORS["chain"])
    assert trusted == [K0.public, K1.public, K2.public, K3.public]
    assert [kid_for(k) for k in trusted] == VECTORS["trusted_kids"]


def test_no_chain_trusts_the_roots_only() -> None:
    assert verify_chain(ROOT, []) == [K0.public]


def test_a_broken_link_is_named() -> None:
    chain = valid_chain()
    del chain[1]  # K1 -> K2 missing: K2's endorsement of K3 hangs from nothing trusted
    with pytest.raises(EndorsementError) as caught:
        verify_chain(ROOT, chain)
    assert caught.value.index == 1
    assert f"signed by key '{kid_for(K2.public)}', which is not trusted" in str(caught.value)


def test_a_wrong_issuer_is_refused() -> None:
    chain = [K0.endorse(K1), K1.endorse(K2, issuer="https://evil.example")]
    with pytest.raises(EndorsementError, match=r"endorsement 1: names issuer .https://evil\.exam"):
        verify_chain(ROOT, chain)


def test_an_endorsement_signed_by_an_untrusted_key_is_refused() -> None:
    attacker = Key(66)
    with pytest.raises(EndorsementError) as caught:
        verify_chain(ROOT, [attacker.endorse(attacker), K0.endorse(K1)])
    assert caught.value.index == 0
    assert "which is not trusted" in caught.value.reason


def test_a_self_endorsement_of_a_root_or_a_cycle_is_refused() -> None:
    with pytest.raises(EndorsementError, match=r"endorsement 0: endorses key .* already trusted"):
        verify_chain(ROOT, [K0.endorse(K0)])
    with pytest.raises(EndorsementError, match=r"endorsement 2: endorses key .* already trusted"):
        verify_chain(ROOT, [K0.endorse(K1), K1.endorse(K2), K2.endorse(K0)])


def test_a_tampered_payload_does_not_verify() -> None:
    good = K0.endorse(K1)
    forged_payload = b64url(
        json.dumps(
            {"iat": IAT, "iss": ISSUER, "key": key_jwk(Key(66).public)},
            separators=(",", ":"),
            sort_keys=True,
        ).encode()
    )
    header, _, signature = good.split(".")
    with pytest.raises(EndorsementError) as caught:
        verify_chain(ROOT, [f"{header}.{forged_payload}.{signature}"])
    assert caught.value.reason == f"the signature does not verify under key {kid_for(K0.public)}"


def test_a_non_canonical_endorsement_is_refused_even_when_signed() -> None:
    spaced = K0.sign_raw(
        {"alg": "EdDSA", "kid": kid_for(K0.public), "typ": "keymint-key-endorsement+jwt"},
        {"iss": ISSUER, "iat": IAT, "key": key_jwk(K1.public)},
    )
    with pytest.raises(EndorsementError, match=r"not an endorsement \(not_canonical"):
        verify_chain(ROOT, [spaced])


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        ({"typ": "at+jwt"}, "header_typ"),
        ({"alg": "none"}, "header_alg"),
        ({"jku": "https://evil"}, "header_extra"),
    ],
)
def test_a_header_other_than_the_endorsement_header_is_refused(
    change: dict[str, str], rule: str
) -> None:
    header = {"alg": "EdDSA", "kid": kid_for(K0.public), "typ": "keymint-key-endorsement+jwt"}
    payload = {"iss": ISSUER, "iat": IAT, "key": key_jwk(K1.public)}
    message = json.dumps({**header, **change}, separators=(",", ":"), sort_keys=True)
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True)
    text = f"{b64url(message.encode())}.{b64url(body.encode())}"
    with pytest.raises(EndorsementFormatError) as caught:
        read_endorsement(text.encode())
    assert caught.value.rule == rule


@pytest.mark.parametrize(
    "jwk",
    [
        {**key_jwk(K1.public), "alg": "EdDSA"},  # a member more
        {k: v for k, v in key_jwk(K1.public).items() if k != "kid"},
        {**key_jwk(K1.public), "kid": kid_for(K2.public)},  # kid of another key
        {**key_jwk(K1.public), "crv": "X25519"},
        {**key_jwk(K1.public), "x": key_jwk(K1.public)["x"] + "A"},
        {**key_jwk(K1.public), "x": key_jwk(K1.public)["x"] + "="},
        ["not", "a", "jwk"],
    ],
)
def test_an_endorsed_key_is_exactly_an_ed25519_jwk(jwk: object) -> None:
    with pytest.raises(EndorsementFormatError) as caught:
        public_key_from_jwk(jwk)
    assert caught.value.rule == "endorsement_key"


def test_a_trust_root_document_is_checked() -> None:
    with_alg = {**key_jwk(K0.public), "alg": "EdDSA", "use": "sig"}
    assert TrustRoot.from_document({"issuer": ISSUER, "keys": [with_alg]}) == ROOT
    for document, problem in (
        ({"issuer": ISSUER}, "expected"),
        ({"issuer": ISSUER, "keys": []}, "at least one key"),
        ({"issuer": "", "keys": [key_jwk(K0.public)]}, "issuer is empty"),
        ({"issuer": ISSUER, "keys": [{**with_alg, "alg": "RS256"}]}, "keys.0.: alg/use"),
        ({"issuer": ISSUER, "keys": [key_jwk(K0.public)] * 2}, "each once"),
    ):
        with pytest.raises(EndorsementError, match=problem):
            TrustRoot.from_document(document)
    assert TrustRoot.from_document(ROOT.to_document()) == ROOT
