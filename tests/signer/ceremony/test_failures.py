"""Cheating, forgery, intruders and crashes: the ceremony aborts everywhere and names who did it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from google.protobuf.message import Message

from signer.ceremony import CeremonyFailed, CommitIncomplete, connect
from signer.ceremony.envelope import Purpose, StatementSigner
from signer.ceremony.service import CULPRIT_METADATA
from signer.ceremony.wire import CeremonyKind, CeremonyParameters
from signer.devca import TlsFiles
from signer.frost import KeyShare, PublicKeyPackage
from signer.keystate import KeyState
from signer.proto import ceremony_pb2 as pb
from tests.signer.ceremony.support import (
    Cluster,
    dev_pki,
    every_quorum_signs,
    raw_stub,
    relayed_driver,
    running_signers,
)


def _forge(statement: pb.SignedStatement, *, cert: TlsFiles, key: TlsFiles) -> pb.SignedStatement:
    """The same announcement, re-signed by whoever holds `key`, carrying `cert`'s certificate."""
    forger = StatementSigner(
        identifier=statement.signer,
        certificate_pem=cert.cert.read_bytes(),
        private_key_pem=key.key.read_bytes(),
    )
    return forger.sign(Purpose.ANNOUNCEMENT, statement.body)


def _assert_nothing_installed(cluster: Cluster) -> None:
    assert not any(node.key_state.has_key for node in cluster.nodes.values())
    assert cluster.in_progress() == []


def test_tampered_sealed_share_is_detected_and_its_sender_named(tmp_path: Path) -> None:
    async def flip_share_from_3(_: int, request: Message) -> None:
        assert isinstance(request, pb.StageRequest)
        for sealed in request.shares:
            if sealed.sender == 3:
                sealed.ciphertext = sealed.ciphertext[:-1] + bytes([sealed.ciphertext[-1] ^ 1])

    async def scenario() -> None:
        async with running_signers(dev_pki(tmp_path), [1, 2, 3]) as cluster:
            async with relayed_driver(cluster, before={"stage": flip_share_from_3}) as driver:
                with pytest.raises(CeremonyFailed) as failed:
                    await driver.dkg(min_participants=2)
            assert failed.value.culprit == 3
            assert failed.value.reporter in (1, 2)
            assert "does not open" in failed.value.reason
            _assert_nothing_installed(cluster)

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("certificate_of", "problem"),
    [("signer-2", "signature does not verify"), ("signer-3", "names spiffe://")],
)
def test_forged_announcement_is_refused_naming_the_participant(
    tmp_path: Path, certificate_of: str, problem: str
) -> None:
    pki = dev_pki(tmp_path)

    async def forge_2(identifier: int, response: Message) -> pb.BeginResponse | None:
        assert isinstance(response, pb.BeginResponse)
        if identifier != 2:
            return None
        forged = _forge(response.announcement, cert=pki[certificate_of], key=pki["signer-3"])
        return pb.BeginResponse(announcement=forged)

    async def scenario() -> None:
        async with running_signers(pki, [1, 2, 3]) as cluster:
            async with relayed_driver(cluster, after={"begin": forge_2}) as driver:
                with pytest.raises(CeremonyFailed) as failed:
                    await driver.dkg(min_participants=2)
            assert failed.value.culprit == 2
            assert problem in failed.value.reason
            _assert_nothing_installed(cluster)

    asyncio.run(scenario())


def test_signer_itself_refuses_a_forged_announcement(tmp_path: Path) -> None:
    """Past a driver that checks nothing, the signer names the forged participant in ABORTED."""
    pki = dev_pki(tmp_path)

    async def scenario() -> None:
        async with running_signers(pki, [1, 2, 3]) as cluster:
            params = CeremonyParameters(
                ceremony_id=bytes(range(16)),
                kind=CeremonyKind.DKG,
                min_participants=2,
                dealers=(1, 2, 3),
                recipients=(1, 2, 3),
            )
            stubs = {i: raw_stub(cluster, i, pki["operator"]) for i in (1, 2, 3)}
            try:
                begun = {
                    i: await stub.Begin(pb.BeginRequest(parameters=params.encode()))
                    for i, (_, stub) in stubs.items()
                }
                announcements = [begun[i].announcement for i in (1, 2, 3)]
                announcements[1] = _forge(
                    announcements[1], cert=pki["signer-2"], key=pki["signer-1"]
                )
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stubs[1][1].Deal(
                        pb.DealRequest(ceremony_id=params.ceremony_id, announcements=announcements)
                    )
                assert refused.value.code() == grpc.StatusCode.ABORTED
                assert (CULPRIT_METADATA, "2") in tuple(refused.value.trailing_metadata())
                # Signer 1 dropped the ceremony at once; the others drop it on Abort or expiry.
                assert cluster.nodes[1].servicer.ceremonies_in_progress == []
            finally:
                for channel, _ in stubs.values():
                    await channel.close()

    asyncio.run(scenario())


def test_a_driver_that_is_not_the_trusted_identity_is_refused(tmp_path: Path) -> None:
    pki = dev_pki(tmp_path)

    async def scenario() -> None:
        async with running_signers(pki, [1, 2, 3]) as cluster:
            channel, stub = raw_stub(cluster, 1, pki["signer-2"])
            try:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.Status(pb.StatusRequest())
                assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            finally:
                await channel.close()
            async with connect(cluster.addresses(), tls_files=pki["signer-2"]) as impostor:
                with pytest.raises(CeremonyFailed, match="PERMISSION_DENIED"):
                    await impostor.dkg(min_participants=2)
            _assert_nothing_installed(cluster)

    asyncio.run(scenario())


def test_a_signer_lost_midway_leaves_every_signer_on_its_old_key(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_signers(dev_pki(tmp_path), [1, 2, 3]) as cluster:
            async with relayed_driver(cluster) as driver:
                await driver.dkg(min_participants=2)
            before = {i: cluster.key(i) for i in (1, 2, 3)}

            async def crash_signer_3(identifier: int, _: Message) -> None:
                if identifier == 3:
                    await cluster.stop(3)

            async with relayed_driver(cluster, before={"stage": crash_signer_3}) as driver:
                with pytest.raises(CeremonyFailed) as failed:
                    await driver.refresh()
            assert failed.value.reporter == 3
            assert failed.value.culprit is None
            assert {i: cluster.key(i) for i in (1, 2, 3)} == before
            assert cluster.nodes[1].servicer.ceremonies_in_progress == []
            assert cluster.nodes[2].servicer.ceremonies_in_progress == []
            every_quorum_signs(cluster, [1, 2, 3], threshold=2)

    asyncio.run(scenario())


def test_a_cheating_dealer_in_a_reshare_leaves_new_signers_empty(tmp_path: Path) -> None:
    async def flip_share_from_2(identifier: int, request: Message) -> None:
        assert isinstance(request, pb.StageRequest)
        if identifier == 5:
            for sealed in request.shares:
                if sealed.sender == 2:
                    sealed.ciphertext = bytes([sealed.ciphertext[0] ^ 1]) + sealed.ciphertext[1:]

    async def scenario() -> None:
        async with running_signers(dev_pki(tmp_path), [1, 2, 3]) as cluster:
            async with relayed_driver(cluster) as driver:
                await driver.dkg(min_participants=2)
            before = {i: cluster.key(i) for i in (1, 2, 3)}
            for new in (4, 5):
                await cluster.start(new)
            async with relayed_driver(cluster, before={"stage": flip_share_from_2}) as driver:
                with pytest.raises(CeremonyFailed) as failed:
                    await driver.reshare(3, [1, 2, 3, 4, 5])
            assert (failed.value.culprit, failed.value.reporter) == (2, 5)
            assert {i: cluster.key(i) for i in (1, 2, 3)} == before
            assert not cluster.nodes[4].key_state.has_key
            assert not cluster.nodes[5].key_state.has_key
            assert cluster.in_progress() == []

    asyncio.run(scenario())


def test_a_failed_install_is_reported_as_an_incomplete_commit(tmp_path: Path) -> None:
    def vault_unavailable(share: KeyShare, package: PublicKeyPackage) -> None:
        raise OSError("vault unavailable")

    async def scenario() -> None:
        pki = dev_pki(tmp_path)
        cluster = Cluster(pki)
        try:
            await cluster.start(1)
            await cluster.start(2)
            await cluster.start(3, KeyState(persist=vault_unavailable))
            async with connect(cluster.addresses(), tls_files=pki["operator"]) as driver:
                with pytest.raises(CommitIncomplete) as incomplete:
                    await driver.dkg(min_participants=2)
            assert (incomplete.value.installed, incomplete.value.pending) == ([1, 2], [3])
            assert not cluster.nodes[3].key_state.has_key
            assert cluster.in_progress() == []
        finally:
            for node in cluster.nodes.values():
                await node.server.stop(grace=None)

    asyncio.run(scenario())
