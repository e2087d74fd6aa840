"""DKG among running signers over loopback mTLS: the group key works, nobody held its secret."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from google.protobuf.message import Message

from signer.ceremony import CeremonyFailed, connect
from signer.frost.encoding import encode_public_key_package
from signer.frost.group import ORDER, serialize_scalar
from signer.frost.polynomial import derive_interpolating_value, polynomial_evaluate
from signer.proto import ceremony_pb2 as pb
from signer.token import kid_for
from tests.signer.ceremony.support import (
    Cluster,
    dev_pki,
    every_quorum_signs,
    relayed_driver,
    running_signers,
    signs,
)


def test_dkg_among_three_signers_signs_with_every_pair(tmp_path: Path) -> None:
    async def scenario() -> None:
        pki = dev_pki(tmp_path)
        async with running_signers(pki, [1, 2, 3]) as cluster:
            installed: list[str] = []
            cluster.nodes[1].key_state.on_install(lambda key: installed.append(key.kid))
            async with connect(cluster.addresses(), tls_files=pki["operator"]) as driver:
                result = await driver.dkg(min_participants=2)
            assert result.kid == kid_for(result.group_public_key)
            assert installed == [result.kid]  # the signing service's listeners hear of it
            for i in (1, 2, 3):
                share, package = cluster.key(i)
                assert encode_public_key_package(package) == result.package_bytes
                assert share.group_public_key == result.group_public_key
            every_quorum_signs(cluster, [1, 2, 3], threshold=2)
            assert cluster.in_progress() == []

    asyncio.run(scenario())


def test_driver_relays_only_ciphertext_and_never_the_group_secret(tmp_path: Path) -> None:
    record: list[bytes] = []
    plaintext_shares: list[bytes] = []

    async def scenario() -> None:
        pki = dev_pki(tmp_path)
        async with running_signers(pki, [1, 2, 3]) as cluster:

            async def remember_plaintexts(dealer: int, response: Message) -> None:
                # White-box: the dealer's polynomial is still in its session while the driver
                # holds its sealed shares, so the test can compute what each box must hide.
                assert isinstance(response, pb.DealResponse)
                (session,) = cluster.nodes[dealer].servicer._participant._sessions.values()
                assert session.dkg_secret is not None
                for sealed in response.shares:
                    value = polynomial_evaluate(sealed.recipient, session.dkg_secret.coefficients)
                    plaintext_shares.append(serialize_scalar(value))
                    assert serialize_scalar(value) not in sealed.ciphertext

            async with relayed_driver(
                cluster, record=record, after={"deal": remember_plaintexts}
            ) as driver:
                result = await driver.dkg(min_participants=2)
            return_keys = {i: cluster.key(i)[0] for i in (1, 2, 3)}
            # The secret the group never assembled, computed here only to look for it.
            weights = {i: derive_interpolating_value([1, 2], i) for i in (1, 2)}
            secret = sum(weights[i] * return_keys[i].signing_share for i in (1, 2)) % ORDER
            Ed25519PublicKey.from_public_bytes(result.group_public_key)  # a plain Ed25519 key
            secrets = [
                serialize_scalar(secret),
                *plaintext_shares,
                *(serialize_scalar(k.signing_share) for k in return_keys.values()),
            ]
            for key in return_keys.values():
                assert key.signing_share != secret
            relayed = b"".join(record)
            assert len(plaintext_shares) == 6  # each of 3 dealers to each of 2 others
            for value in secrets:
                assert value not in relayed
                assert value[::-1] not in relayed

    asyncio.run(scenario())


def test_a_second_dkg_adds_a_key_and_replace_existing_key_drops_the_others(
    tmp_path: Path,
) -> None:
    async def scenario(cluster: Cluster) -> None:
        async with connect(cluster.addresses(), tls_files=cluster.pki["operator"]) as driver:
            first = await driver.dkg(min_participants=2)
            second = await driver.dkg(min_participants=2)  # destroys nothing
            for i in (1, 2, 3):
                assert cluster.nodes[i].key_state.kids == (first.kid, second.kid)
            for result in (first, second):
                shares = [cluster.nodes[i].key_state.get(result.kid) for i in (1, 3)]
                assert signs([k.share for k in shares if k is not None], result.package)
            # Dropping the keys held takes a local approval for each, on every signer.
            with pytest.raises(CeremonyFailed, match="approve-replace"):
                await driver.dkg(min_participants=3, replace_existing_key=True)
            approved = [
                cluster.approvals(i).approve(kid)[0]
                for i in (1, 2, 3)
                for kid in (first.kid, second.kid)
            ]
            third = await driver.dkg(min_participants=3, replace_existing_key=True)
        for i in (1, 2, 3):
            assert cluster.nodes[i].key_state.kids == (third.kid,)
        assert not any(path.exists() for path in approved)  # one approval, one replacement
        every_quorum_signs(cluster, [1, 2, 3], threshold=3)

    async def main() -> None:
        async with running_signers(dev_pki(tmp_path), [1, 2, 3]) as cluster:
            await scenario(cluster)

    asyncio.run(main())


def test_trusted_dealer_install_for_development(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        pki = dev_pki(tmp_path)
        async with running_signers(pki, [1, 2, 3], allow_trusted_dealer=True) as cluster:
            async with connect(cluster.addresses(), tls_files=pki["operator"]) as driver:
                result = await driver.deal(min_participants=2)
            for i in (1, 2, 3):
                assert cluster.key(i)[1].group_public_key == result.group_public_key
            every_quorum_signs(cluster, [1, 2, 3], threshold=2)

    with caplog.at_level("WARNING"):
        asyncio.run(scenario())
    warnings = [r.getMessage() for r in caplog.records if "TRUSTED" in r.getMessage()]
    assert any("driver process is generating the whole group secret" in w for w in warnings)
    assert sum("TRUSTED-DEALER share" in w for w in warnings) == 3
