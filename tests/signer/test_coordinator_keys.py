"""The coordinator adopts a group key only when at least t signers report it identically (t: the
larger of its threshold and the deployment's), and signs with whichever adopted key a message
names (real signer processes)."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from extauthz.dev.settings import ISSUER
from signer.coordinator import Coordinator, CoordinatorConfigError, QuorumUnavailable, UnknownKey
from signer.devca import TlsFiles
from signer.endorsement import TrustRoot, endorsement_message, verify_chain
from signer.frost import trusted_dealer_keygen
from signer.key_agreement import KeyAgreementError
from signer.token import compact, kid_for
from tests.signer.harness import SignerCluster, evidence_for, token_message


def coordinator_for(cluster: SignerCluster) -> Coordinator:
    return Coordinator(
        endpoints=cluster.endpoints(), tls=cluster.coordinator_tls, threshold=cluster.threshold
    )


def test_every_key_t_signers_hold_is_adopted_signs_by_its_kid_and_endorses_another(
    tmp_path: Path,
) -> None:
    cluster = SignerCluster(tmp_path, 2, 3)
    assert cluster.package is not None
    first = cluster.package.group_public_key
    shares, second_package, _ = trusted_dealer_keygen(2, 3)
    for share in shares:
        cluster.seal_key(share.identifier, share, second_package)
    second = second_package.group_public_key
    cluster.start()

    async def run() -> None:
        coordinator = coordinator_for(cluster)
        await coordinator.start()
        try:
            assert set(coordinator.packages) == {kid_for(first), kid_for(second)}
            for key in (first, second):
                message = token_message(key)
                outcome = await coordinator.sign(message, evidence=evidence_for("svc"))
                Ed25519PublicKey.from_public_bytes(key).verify(outcome.signature, message)
            # The signers endorse one key they hold with the other; the chain then trusts both.
            message = endorsement_message(first, second, issuer=ISSUER, issued_at=int(time.time()))
            outcome = await coordinator.sign(message)
            chain = [compact(message, outcome.signature)]
            assert verify_chain(TrustRoot(ISSUER, (first,)), chain) == [first, second]
        finally:
            await coordinator.close()

    try:
        asyncio.run(run())
    finally:
        cluster.stop()


def test_a_key_only_one_signer_reports_is_ignored_and_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cluster = SignerCluster(tmp_path, 2, 3)
    assert cluster.package is not None
    agreed = cluster.package.group_public_key
    shares, own_package, _ = trusted_dealer_keygen(2, 3)
    cluster.seal_key(3, shares[2], own_package)  # only signer 3 holds this one
    own = kid_for(own_package.group_public_key)
    cluster.start()
    caplog.set_level(logging.WARNING, logger="signer.coordinator")

    async def run() -> None:
        coordinator = coordinator_for(cluster)
        await coordinator.start()
        try:
            assert list(coordinator.packages) == [kid_for(agreed)]
            message = token_message(agreed)
            outcome = await coordinator.sign(message, evidence=evidence_for("svc"))
            Ed25519PublicKey.from_public_bytes(agreed).verify(outcome.signature, message)
            with pytest.raises(UnknownKey, match=own):
                await coordinator.sign(token_message(own_package.group_public_key))
        finally:
            await coordinator.close()

    try:
        asyncio.run(run())
    finally:
        cluster.stop()
    assert f"key {own} is not adopted: signers [3] report this package of it" in caplog.text


def test_a_signer_with_another_package_of_the_adopted_key_does_not_sign_with_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = 987654321
    shares, package, _ = trusted_dealer_keygen(2, 3, secret_key=secret)
    other_shares, other_package, _ = trusted_dealer_keygen(2, 3, secret_key=secret)
    assert other_package.group_public_key == package.group_public_key
    cluster = SignerCluster(tmp_path, 2, 3, dealer=False)
    for share in shares[:2]:
        cluster.seal_key(share.identifier, share, package)
    cluster.seal_key(3, other_shares[2], other_package)
    kid = kid_for(package.group_public_key)
    cluster.start()
    caplog.set_level(logging.WARNING, logger="signer.coordinator")

    async def run() -> None:
        coordinator = coordinator_for(cluster)
        await coordinator.start()
        try:
            assert coordinator.packages == {kid: package}
            for _ in range(5):
                outcome = await coordinator.sign(
                    token_message(package.group_public_key), evidence=evidence_for("svc")
                )
                assert outcome.signers == (1, 2)
            cluster.signers[1].kill()
            with pytest.raises(QuorumUnavailable) as caught:
                await coordinator.sign(
                    token_message(package.group_public_key), evidence=evidence_for("svc")
                )
            assert caught.value.unavailable[3] == f"does not hold the adopted package of key {kid}"
        finally:
            await coordinator.close()

    try:
        asyncio.run(run())
    finally:
        cluster.stop()
    assert f"signers [3] report key {kid} with a package other than the one adopted" in caplog.text


def test_start_fails_when_no_key_reaches_its_threshold(tmp_path: Path) -> None:
    cluster = SignerCluster(tmp_path, 2, 3, dealer=False)
    kids = {}
    for identifier in (1, 2, 3):  # every signer holds a share of a key nobody else holds
        shares, package, _ = trusted_dealer_keygen(2, 3)
        cluster.seal_key(identifier, shares[identifier - 1], package)
        kids[identifier] = kid_for(package.group_public_key)
    cluster.start()

    async def run() -> None:
        coordinator = coordinator_for(cluster)
        try:
            with pytest.raises(KeyAgreementError) as caught:
                await coordinator.start()
        finally:
            await coordinator.close()
        assert caught.value.reports == {kids[i]: [i] for i in (1, 2, 3)}
        assert caught.value.needed == {kids[i]: 2 for i in (1, 2, 3)}
        for i in (1, 2, 3):
            assert f"{kids[i]} reported by 1 signer(s) [{i}], needs 2" in str(caught.value)

    try:
        asyncio.run(run())
    finally:
        cluster.stop()


def test_a_coordinator_with_a_deployment_threshold_below_two_is_refused(tmp_path: Path) -> None:
    """Nothing is contacted: the threshold is checked before any channel is made."""
    tls = TlsFiles(tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem")
    with pytest.raises(CoordinatorConfigError) as caught:
        Coordinator(endpoints=[], tls=tls, threshold=1)
    assert str(caught.value) == (
        "the deployment's threshold is 1; it must be at least 2 (one signer must never sign alone)"
    )
