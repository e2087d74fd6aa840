"""Key ceremonies among real signer processes: DKG, every pair signs, reshare 2-of-3 to 3-of-5;
the development dealer switch and a signer with no operators, as their logs say at start."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from extauthz.dev.settings import ISSUER
from signer.ceremony.driver import connect
from signer.coordinator import Coordinator
from signer.devca import signer_name
from signer.proto import ceremony_pb2, ceremony_pb2_grpc
from signer.tls import secure_channel
from signer.token import compact, kid_for
from tests.signer.harness import SignerCluster, evidence_for, token_message


async def sign_with(cluster: SignerCluster, ids: tuple[int, ...], group_key: bytes) -> None:
    coordinator = Coordinator(
        endpoints=cluster.endpoints(ids), tls=cluster.coordinator_tls, threshold=cluster.threshold
    )
    await coordinator.start()
    try:
        assert list(coordinator.packages) == [kid_for(group_key)]
        message = token_message(group_key)
        outcome = await coordinator.sign(message, evidence=evidence_for("svc"))
        assert set(outcome.signers) <= set(ids)
        public_key = Ed25519PublicKey.from_public_bytes(group_key)
        public_key.verify(outcome.signature, message)
        claims = jwt.decode(
            compact(message, outcome.signature),
            public_key,
            algorithms=["EdDSA"],
            audience="https://api.internal",
            issuer=ISSUER,
        )
        assert claims["sub"] == "svc"
    finally:
        await coordinator.close()


def test_dkg_then_every_pair_signs_then_reshare_to_3_of_5(tmp_path: Path) -> None:
    cluster = SignerCluster(tmp_path, 2, 3, dealer=False, spare=2)
    cluster.start()

    async def run() -> None:
        async with connect(cluster.addresses([1, 2, 3]), tls_files=cluster.operator_tls) as d:
            result = await d.dkg(2)
        group_key = result.group_public_key
        for pair in itertools.combinations((1, 2, 3), 2):
            await sign_with(cluster, pair, group_key)

        # A restarted signer unseals its DKG share from its vault and signs again.
        cluster.signers[2].stop()
        cluster.signers[2].start()
        await sign_with(cluster, (2, 3), group_key)

        everyone = [1, 2, 3, 4, 5]
        async with connect(cluster.addresses(everyone), tls_files=cluster.operator_tls) as d:
            reshared = await d.reshare(3, everyone, dealers=[1, 3])
        assert reshared.group_public_key == group_key
        assert reshared.package.min_participants == 3
        for trio in ((1, 2, 3), (3, 4, 5), (1, 4, 5)):
            await sign_with(cluster, trio, group_key)

    try:
        asyncio.run(run())
    finally:
        cluster.stop()


def test_a_signer_started_for_development_warns_and_takes_a_dealt_share(tmp_path: Path) -> None:
    cluster = SignerCluster(tmp_path, 2, 3, dealer=False)
    for process in cluster.signers.values():
        process.env["KEYMINT_DEV_ALLOW_TRUSTED_DEALER"] = "true"
    cluster.start()

    async def run() -> None:
        async with connect(cluster.addresses([1, 2, 3]), tls_files=cluster.operator_tls) as d:
            dealt = await d.deal(2)
        await sign_with(cluster, (1, 3), dealt.group_public_key)

    try:
        asyncio.run(run())
    finally:
        cluster.stop()
    for process in cluster.signers.values():
        assert (
            "KEYMINT_DEV_ALLOW_TRUSTED_DEALER=true: this signer takes part in trusted-dealer "
            "installs, whose driver knows the whole group secret"
        ) in process.log.read_text()


def test_a_signer_without_operator_ids_says_so_and_serves_no_ceremony(tmp_path: Path) -> None:
    cluster = SignerCluster(tmp_path, 2, 2, dealer=False)
    signer = cluster.signers[1]
    del signer.env["KEYMINT_OPERATOR_IDS"]
    signer.start()

    async def run() -> None:
        channel = secure_channel(signer.address, cluster.operator_tls, signer_name(1))
        try:
            stub = ceremony_pb2_grpc.KeyCeremonyStub(channel)  # type: ignore[no-untyped-call]
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Status(ceremony_pb2.StatusRequest())
        finally:
            await channel.close()
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert refused.value.details() == (
            "this signer serves no key ceremony: it was started without KEYMINT_OPERATOR_IDS"
        )

    try:
        asyncio.run(run())
    finally:
        signer.stop()
    assert (
        "WARNING signer.server: KEYMINT_OPERATOR_IDS is not set: this signer serves no key ceremony"
    ) in signer.log.read_text()
