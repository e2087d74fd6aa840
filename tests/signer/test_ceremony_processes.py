"""Key ceremonies among real signer processes: DKG, every pair signs, reshare 2-of-3 to 3-of-5."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from signer.ceremony.driver import connect
from signer.coordinator import Coordinator
from signer.token import compact, kid_for
from tests.signer.harness import ISSUER, SignerCluster, evidence_for, token_message


async def sign_with(cluster: SignerCluster, ids: tuple[int, ...], group_key: bytes) -> None:
    coordinator = Coordinator(endpoints=cluster.endpoints(ids), tls=cluster.coordinator_tls)
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
        async with connect(cluster.addresses([1, 2, 3]), tls_files=cluster.coordinator_tls) as d:
            result = await d.dkg(2)
        group_key = result.group_public_key
        for pair in itertools.combinations((1, 2, 3), 2):
            await sign_with(cluster, pair, group_key)

        # A restarted signer unseals its DKG share from its vault and signs again.
        cluster.signers[2].stop()
        cluster.signers[2].start()
        await sign_with(cluster, (2, 3), group_key)

        everyone = [1, 2, 3, 4, 5]
        async with connect(cluster.addresses(everyone), tls_files=cluster.coordinator_tls) as d:
            reshared = await d.reshare(3, everyone, dealers=[1, 3])
        assert reshared.group_public_key == group_key
        assert reshared.package.min_participants == 3
        for trio in ((1, 2, 3), (3, 4, 5), (1, 4, 5)):
            await sign_with(cluster, trio, group_key)

    try:
        asyncio.run(run())
    finally:
        cluster.stop()
