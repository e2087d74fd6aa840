"""A signer holding a key below the deployment's threshold (FROST_T) gives no share with it.

Such a key could come from a reshare run before the signers knew FROST_T, or be installed
otherwise; the group key is unchanged, so every verifier would accept what it signs. The signer
service runs in this process over gRPC with mTLS (the real SignerService and KeyedGuard, started
as `signer serve` starts them with FROST_T=3) and is called with the coordinator's credentials.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

import grpc

from benchmarks.standin_signing import StandInEvidenceChecker
from extauthz.dev.settings import ISSUER
from signer.devca import signer_name, spiffe_id, tls_files
from signer.frost import KeyShare, PublicKeyPackage, commit, trusted_dealer_keygen
from signer.frost.encoding import decode_signing_commitment, encode_commitment_list
from signer.keystate import KeyState, SigningKey
from signer.proto import signer_pb2, signer_pb2_grpc
from signer.server import KeyedGuard
from signer.service import SignerService
from signer.tls import secure_channel, server_credentials
from signer.token import kid_for
from tests.signer.harness import SignerCluster, evidence_for, token_message


class Records:
    def __init__(self) -> None:
        self.records: list[tuple[str, Mapping[str, object]]] = []

    async def append(self, event: str, data: Mapping[str, object]) -> object:
        self.records.append((event, dict(data)))
        return None


def _sign_once(
    tmp_path: Path,
    cluster: SignerCluster,
    shares: list[KeyShare],
    package: PublicKeyPackage,
    min_threshold: int,
) -> tuple[grpc.aio.AioRpcError | None, Records]:
    """One Sign under `package` at signer 1, whose FROST_T is `min_threshold`."""
    keys = KeyState([SigningKey(shares[0], package)])
    audit = Records()
    service = SignerService(
        key_state=keys,
        guard=KeyedGuard(
            key_state=keys,
            checker=StandInEvidenceChecker(),
            issuer=ISSUER,
            max_ttl=3600,
            min_threshold=min_threshold,
        ),
        audit=audit,
        allowed_callers=[spiffe_id("coordinator")],
    )

    async def run() -> grpc.aio.AioRpcError | None:
        server = grpc.aio.server()
        signer_pb2_grpc.add_SignerServicer_to_server(service, server)  # type: ignore[no-untyped-call]
        files = tls_files(tmp_path / "pki", signer_name(1))
        port = server.add_secure_port("127.0.0.1:0", server_credentials(files))
        await server.start()
        channel = secure_channel(f"127.0.0.1:{port}", cluster.coordinator_tls, signer_name(1))
        try:
            stub = signer_pb2_grpc.SignerStub(channel)
            batch = await stub.Commit(signer_pb2.CommitRequest(count=1))
            own = decode_signing_commitment(batch.commitments[0])
            request = signer_pb2.SignRequest(
                message=token_message(package.group_public_key),
                commitment_list=encode_commitment_list([own, commit(shares[1]).commitment]),
                evidence=evidence_for("svc"),
                request_id="req-lowered",
            )
            try:
                await stub.Sign(request)
            except grpc.aio.AioRpcError as refused:
                return refused
            return None
        finally:
            await channel.close()
            await server.stop(grace=None)

    return asyncio.run(run()), audit


def test_a_key_below_frost_t_gives_no_share_and_the_refusal_is_audited(tmp_path: Path) -> None:
    cluster = SignerCluster(tmp_path, 3, 3)  # for its PKI
    shares, lowered, _ = trusted_dealer_keygen(2, 3)

    refused, audit = _sign_once(tmp_path, cluster, shares, lowered, min_threshold=3)

    assert refused is not None
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
    detail = (
        f"key {kid_for(lowered.group_public_key)} needs 2 signers, below this signer's minimum "
        "FROST_T (3)"
    )
    assert refused.details() == f"guard:key_threshold: {detail}"
    refusals = [data for event, data in audit.records if event == "refusal"]
    assert [(r["rule"], r["detail"], r["request_id"]) for r in refusals] == [
        ("guard:key_threshold", detail, "req-lowered")
    ]


def test_the_same_key_signs_where_frost_t_allows_it(tmp_path: Path) -> None:
    cluster = SignerCluster(tmp_path, 3, 3)
    shares, package, _ = trusted_dealer_keygen(2, 3)

    refused, audit = _sign_once(tmp_path, cluster, shares, package, min_threshold=2)

    assert refused is None
    assert [event for event, _ in audit.records] == ["sign_request"]
