"""Random t-of-n keys, up to 10-of-15: what any t can do, and what fewer cannot."""

from __future__ import annotations

import nacl.signing
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signer.frost import (
    InvalidCommitmentList,
    InvalidSignature,
    InvalidSignatureShare,
    KeyShare,
    PublicKeyPackage,
    SignatureShare,
    aggregate,
    dkg,
    reshare,
    trusted_dealer_keygen,
    verify,
)
from signer.frost.group import ORDER, Scalar
from tests.signer.frost.support import sign_shares, threshold_sign

HEAVY = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def keys_and_subset(draw: st.DrawFn) -> tuple[list[KeyShare], PublicKeyPackage, list[KeyShare]]:
    n = draw(st.integers(min_value=2, max_value=15))
    t = draw(st.integers(min_value=2, max_value=min(n, 10)))
    shares, package, _ = trusted_dealer_keygen(t, n)
    size = draw(st.integers(min_value=t, max_value=n))
    subset = draw(st.permutations(shares))[:size]
    return shares, package, subset


def assert_ed25519(public_key: bytes, msg: bytes, signature: bytes) -> None:
    Ed25519PublicKey.from_public_bytes(public_key).verify(signature, msg)
    nacl.signing.VerifyKey(public_key).verify(msg, signature)
    assert verify(public_key, msg, signature)  # type: ignore[arg-type]


@HEAVY
@given(keys_and_subset(), st.binary(max_size=256))
def test_any_t_signers_produce_an_ed25519_signature(
    keys: tuple[list[KeyShare], PublicKeyPackage, list[KeyShare]], msg: bytes
) -> None:
    _, package, subset = keys
    signature = threshold_sign(subset, package, msg)
    assert_ed25519(package.group_public_key, msg, signature)


@HEAVY
@given(st.data())
def test_fewer_than_t_signers_cannot_sign(data: st.DataObject) -> None:
    n = data.draw(st.integers(min_value=3, max_value=15))
    t = data.draw(st.integers(min_value=3, max_value=min(n, 10)))
    shares, package, _ = trusted_dealer_keygen(t, n)
    subset = data.draw(st.permutations(shares))[: t - 1]
    # The API refuses outright: a commitment list shorter than the threshold.
    with pytest.raises(InvalidCommitmentList):
        threshold_sign(subset, package, b"m")
    # And the mathematics refuses too: pretend the threshold were t-1 and every share is
    # individually consistent, yet the sum is not a signature under the group key.
    lowered = [
        KeyShare(s.identifier, s.signing_share, s.group_public_key, t - 1, n) for s in subset
    ]
    lowered_package = PublicKeyPackage(package.group_public_key, package.verifying_shares, t - 1)
    with pytest.raises(InvalidSignature):
        threshold_sign(lowered, lowered_package, b"m")


@HEAVY
@given(keys_and_subset(), st.data())
def test_tampered_share_is_named(
    keys: tuple[list[KeyShare], PublicKeyPackage, list[KeyShare]], data: st.DataObject
) -> None:
    _, package, subset = keys
    sig_shares, commitment_list, _ = sign_shares(subset, b"msg")
    victim = data.draw(st.integers(min_value=0, max_value=len(sig_shares) - 1))
    delta = data.draw(st.integers(min_value=1, max_value=ORDER - 1))
    bad = sig_shares[victim]
    sig_shares[victim] = SignatureShare(bad.identifier, Scalar((bad.share + delta) % ORDER))
    with pytest.raises(InvalidSignatureShare) as caught:
        aggregate(commitment_list, b"msg", package, sig_shares)
    assert caught.value.culprits == (bad.identifier,)


def run_dkg(t: int, n: int) -> tuple[list[KeyShare], PublicKeyPackage]:
    round1 = {i: dkg.part1(i, t, n) for i in range(1, n + 1)}
    packages = {i: p for i, (_, p) in round1.items()}
    sent = {
        i: dkg.part2(secret, {j: p for j, p in packages.items() if j != i})
        for i, (secret, _) in round1.items()
    }
    results = [
        dkg.part3(
            secret,
            {j: p for j, p in packages.items() if j != i},
            {j: sent[j][i] for j in sent if j != i},
        )
        for i, (secret, _) in round1.items()
    ]
    assert all(r[1] == results[0][1] for r in results), "all derive the same public key package"
    return [r[0] for r in results], results[0][1]


@settings(max_examples=8, deadline=None)
@given(st.data())
def test_dkg_then_any_t_sign(data: st.DataObject) -> None:
    n = data.draw(st.integers(min_value=2, max_value=7))
    t = data.draw(st.integers(min_value=2, max_value=n))
    shares, package = run_dkg(t, n)
    subset = data.draw(st.permutations(shares))[:t]
    assert_ed25519(package.group_public_key, b"dkg", threshold_sign(subset, package, b"dkg"))


def run_reshare(
    shares: list[KeyShare], package: PublicKeyPackage, plan: reshare.ResharePlan
) -> tuple[list[KeyShare], PublicKeyPackage]:
    by_id = {s.identifier: s for s in shares}
    dealings = {d: reshare.deal(by_id[d], plan) for d in plan.dealers}
    results = [
        reshare.receive(
            r, plan, package, {d: (x.commitment, x.shares[r]) for d, x in dealings.items()}
        )
        for r in plan.recipients
    ]
    return [k for k, _ in results], results[0][1]


@HEAVY
@given(st.data())
def test_refresh_keeps_group_key_and_retires_old_shares(data: st.DataObject) -> None:
    n = data.draw(st.integers(min_value=2, max_value=8))
    t = data.draw(st.integers(min_value=2, max_value=n))
    shares, package, _ = trusted_dealer_keygen(t, n)
    new_shares, new_package = run_reshare(shares, package, reshare.refresh_plan(package))
    assert new_package.group_public_key == package.group_public_key
    for old, new in zip(shares, new_shares, strict=True):
        assert old.signing_share != new.signing_share
    subset = data.draw(st.permutations(new_shares))[:t]
    assert_ed25519(package.group_public_key, b"r", threshold_sign(subset, new_package, b"r"))
    # An old share among new ones: its signer is named, and no signature comes out.
    stale = next(s for s in shares if s.identifier == subset[0].identifier)
    with pytest.raises(InvalidSignatureShare) as caught:
        threshold_sign([stale, *subset[1:]], new_package, b"r")
    assert caught.value.culprits == (stale.identifier,)


@HEAVY
@given(st.data())
def test_reshare_to_new_threshold_keeps_group_key(data: st.DataObject) -> None:
    n = data.draw(st.integers(min_value=2, max_value=6))
    t = data.draw(st.integers(min_value=2, max_value=n))
    new_n = data.draw(st.integers(min_value=2, max_value=8))
    new_t = data.draw(st.integers(min_value=2, max_value=new_n))
    shares, package, _ = trusted_dealer_keygen(t, n)
    dealers = sorted(s.identifier for s in data.draw(st.permutations(shares))[:t])
    first_new = data.draw(st.integers(min_value=1, max_value=n + 1))
    recipients = tuple(range(first_new, first_new + new_n))
    plan = reshare.ResharePlan(tuple(dealers), recipients, new_t)
    new_shares, new_package = run_reshare(shares, package, plan)
    assert new_package.group_public_key == package.group_public_key
    assert new_package.min_participants == new_t
    subset = data.draw(st.permutations(new_shares))[:new_t]
    signature = threshold_sign(subset, new_package, b"reshared")
    assert_ed25519(package.group_public_key, b"reshared", signature)
