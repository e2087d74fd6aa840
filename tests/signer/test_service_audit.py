"""A signer whose audit log cannot be written releases no share, and says it cannot serve.

The signer service runs in this process over gRPC with mTLS (the real SignerService, KeyedGuard and
nonce pool; the audit sink fails as a full disk does), and is called with the coordinator's
credentials. The answer is UNAVAILABLE `refusing_service:`, which the coordinator reads as a
signer that answered (set aside with back-off), not as one that is unreachable; the nonces the
request named are spent all the same.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

import grpc
import pytest

from benchmarks.standin_signing import StandInEvidenceChecker
from extauthz.dev.settings import ISSUER
from signer.audit import AuditError
from signer.devca import signer_name, spiffe_id, tls_files
from signer.frost import commit
from signer.frost.encoding import decode_signing_commitment, encode_commitment_list
from signer.keystate import KeyState, SigningKey
from signer.proto import signer_pb2, signer_pb2_grpc
from signer.server import KeyedGuard
from signer.service import REFUSING_SERVICE, SignerService
from signer.signer_faults import SignerFault
from signer.tls import secure_channel, server_credentials
from tests.signer.harness import SignerCluster, evidence_for, token_message


class FullDisk:
    def __init__(self) -> None:
        self.attempts: list[str] = []

    async def append(self, event: str, data: Mapping[str, object] | None = None) -> object:
        self.attempts.append(event)
        raise AuditError("audit.jsonl: write failed: No space left on device")


def test_no_share_leaves_a_signer_whose_audit_log_cannot_be_written(tmp_path: Path) -> None:
    cluster = SignerCluster(tmp_path, 2, 3)
    assert cluster.package is not None
    keys = KeyState([SigningKey(cluster.shares[0], cluster.package)])
    disk = FullDisk()
    service = SignerService(
        key_state=keys,
        guard=KeyedGuard(
            key_state=keys, checker=StandInEvidenceChecker(), issuer=ISSUER, max_ttl=3600
        ),
        audit=disk,
        allowed_callers=[spiffe_id("coordinator")],
    )

    async def run() -> grpc.aio.AioRpcError:
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
                message=token_message(cluster.package.group_public_key),
                commitment_list=encode_commitment_list([own, commit(cluster.shares[1]).commitment]),
                evidence=evidence_for("svc"),
                request_id="req-full-disk",
            )
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Sign(request)
            # The nonces are spent: the same request cannot get a share later either.
            with pytest.raises(grpc.aio.AioRpcError) as again:
                await stub.Sign(request)
            assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            return refused.value
        finally:
            await channel.close()
            await server.stop(grace=None)

    refused = asyncio.run(run())
    assert refused.code() == grpc.StatusCode.UNAVAILABLE
    assert (refused.details() or "").startswith(REFUSING_SERVICE)
    assert "audit log cannot be written" in (refused.details() or "")
    assert disk.attempts[0] == "sign_request"
    # The coordinator reads it as an answer (back-off), not as a signer it cannot reach.
    assert SignerFault.of(refused).misbehaved
