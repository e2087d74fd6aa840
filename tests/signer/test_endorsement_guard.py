"""What a signer endorses: a message per rule that breaks exactly that rule, and the one accepted.

The signer (participant 1) holds keys A and B (2-of-3) and T (3-of-3); X is a key it does not hold.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from signer.endorsement import ENDORSEMENT_RULES, ENDORSEMENT_TYP, Endorsement, key_jwk
from signer.endorsement_guard import check_endorsement
from signer.frost import KeyShare, PublicKeyPackage, trusted_dealer_keygen
from signer.guard import GuardEvidence, GuardRefusal
from signer.keystate import KeyState
from signer.server import KeyedGuard
from signer.token import b64url, header_for, kid_for, signing_input

ISSUER = "https://keymint.example.org"
NOW = 1_900_000_000


Dealt = tuple[KeyShare, PublicKeyPackage]


def dealt(t: int, n: int) -> Dealt:
    shares, package, _ = trusted_dealer_keygen(t, n)
    return shares[0], package


A, B, T, X = dealt(2, 3), dealt(2, 3), dealt(3, 3), dealt(2, 3)
KEYS = KeyState()
for share, package in (A, B, T):
    KEYS.install(share, package)


def public(k: Dealt) -> bytes:
    return bytes(k[1].group_public_key)


def encode(header: dict[str, Any], payload: dict[str, Any], separators: Any = (",", ":")) -> bytes:
    def segment(value: dict[str, Any]) -> str:
        return b64url(json.dumps(value, separators=separators, sort_keys=True).encode())

    return f"{segment(header)}.{segment(payload)}".encode()


def message(
    endorser: Dealt = A,
    endorsed: Dealt = B,
    *,
    header: dict[str, Any] | None = None,
    payload: dict[str, Any] | None = None,
    separators: Any = (",", ":"),
) -> bytes:
    h = {"alg": "EdDSA", "kid": kid_for(public(endorser)), "typ": ENDORSEMENT_TYP}
    p = {"iss": ISSUER, "iat": NOW, "key": key_jwk(public(endorsed))}
    return encode({**h, **(header or {})}, {**p, **(payload or {})}, separators)


def check(encoded: bytes) -> Endorsement:
    return check_endorsement(encoded, keys=KEYS, issuer=ISSUER, now=NOW)


BROKEN: list[tuple[str, Callable[[], bytes], str]] = [
    ("payload not JSON", lambda: message().split(b".")[0] + b".bm90IGpzb24", "not_a_token"),
    ("whitespace in the JSON", lambda: message(separators=(", ", ": ")), "not_canonical"),
    ("alg none", lambda: message(header={"alg": "none"}), "header_alg"),
    ("a jku header", lambda: message(header={"jku": "https://evil"}), "header_extra"),
    ("an exp claim", lambda: message(payload={"exp": NOW + 60}), "endorsement_claims"),
    ("iat a string", lambda: message(payload={"iat": str(NOW)}), "endorsement_claims"),
    (
        "key with alg",
        lambda: message(payload={"key": {**key_jwk(public(B)), "alg": "EdDSA"}}),
        "endorsement_key",
    ),
    ("endorser not held", lambda: message(endorser=X), "header_kid"),
    ("another issuer", lambda: message(payload={"iss": "https://evil"}), "issuer"),
    ("iat an hour ago", lambda: message(payload={"iat": NOW - 3600}), "iat_skew"),
    ("iat in an hour", lambda: message(payload={"iat": NOW + 3600}), "iat_skew"),
    ("a key endorsing itself", lambda: message(endorser=A, endorsed=A), "endorsement_self"),
    ("a key it does not hold", lambda: message(endorsed=X), "endorsement_key_unknown"),
    ("3-of-3 endorsing 2-of-3", lambda: message(endorser=T, endorsed=B), "endorsement_threshold"),
]


@pytest.mark.parametrize(("build", "rule"), [r[1:] for r in BROKEN], ids=[r[0] for r in BROKEN])
def test_an_endorsement_breaking_one_rule_is_refused_by_that_rule(
    build: Callable[[], bytes], rule: str
) -> None:
    with pytest.raises(GuardRefusal) as refused:
        check(build())
    assert refused.value.rule == rule


def test_an_endorsing_key_below_frost_t_endorses_nothing() -> None:
    """A key lowered below the deployment's threshold must not vouch for another either."""
    with pytest.raises(GuardRefusal) as refused:
        check_endorsement(
            message(endorser=A, endorsed=T), keys=KEYS, issuer=ISSUER, now=NOW, min_threshold=3
        )
    assert refused.value.rule == "key_threshold"
    assert refused.value.detail == (
        f"key {kid_for(public(A))} needs 2 signers, below this signer's minimum FROST_T (3)"
    )
    # At FROST_T=2 the same endorsement (2-of-3 vouching for 3-of-3) is accepted.
    assert check(message(endorser=A, endorsed=T)).kid == kid_for(public(T))


def test_every_endorsement_rule_has_a_breaking_message() -> None:
    assert set(ENDORSEMENT_RULES) <= {rule for _, _, rule in BROKEN}


def test_a_key_it_holds_endorsed_by_another_it_holds_is_accepted() -> None:
    endorsement = check(message())
    assert (endorsement.endorser_kid, endorsement.key) == (kid_for(public(A)), public(B))
    assert check(message(endorser=B, endorsed=T)).kid == kid_for(public(T))  # 2 -> 3 is fine
    assert check(message(payload={"iat": NOW - 60})).issued_at == NOW - 60  # skew is inclusive


class NoChecker:
    """An evidence checker that must not be reached."""

    def check(self, *args: object, **kwargs: object) -> Any:
        raise AssertionError("an endorsement needs no evidence")


def test_the_signers_guard_routes_endorsements_and_tokens_by_typ() -> None:
    guard = KeyedGuard(
        key_state=KEYS, checker=NoChecker(), issuer=ISSUER, max_ttl=900, clock=lambda: NOW
    )
    accepted = asyncio.run(guard.check(message(), None))
    assert isinstance(accepted, Endorsement)
    token = signing_input(
        header_for(public(B)),
        {
            "iss": ISSUER,
            "sub": "s",
            "aud": "a",
            "scope": "",
            "iat": NOW,
            "nbf": NOW,
            "exp": NOW + 60,
            "jti": "j",
        },
    )
    with pytest.raises(GuardRefusal) as refused:
        asyncio.run(guard.check(token, None))
    assert refused.value.rule == "evidence_missing"  # the token guard of key B, not endorsements
    unheld = signing_input(header_for(public(X)), {"sub": "s"})
    with pytest.raises(GuardRefusal) as refused:
        asyncio.run(guard.check(unheld, GuardEvidence(kind="oidc_token", value=b"x")))
    assert refused.value.rule == "header_kid"
