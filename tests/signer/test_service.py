"""The signer service's records: every refused Sign is on the signer's audit log, whatever the
message holds, and nothing secret-shaped from it reaches the disk.

One real signer process (SignerService with its AuditLog) serves the module; each test sends it
a Sign request over mTLS with the coordinator's credentials, as a gateway would, and reads the
records the process made durable before it answered.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from signer.audit import token_ref, verify_log
from signer.frost import commit
from signer.frost.encoding import decode_signing_commitment, encode_commitment_list
from signer.proto import signer_pb2, signer_pb2_grpc
from signer.tls import secure_channel
from signer.token import header_for
from tests.signer.harness import SignerCluster, evidence_for, token_message

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ2aWN0aW0ifQ.c2lnbmF0dXJl"
PRIVATE_KEY = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SignerCluster]:
    """Shares of a 2-of-3 key; only signer 1 runs (share 2 makes the second commitment)."""
    cluster = SignerCluster(tmp_path_factory.mktemp("service"), 2, 3)
    cluster.signers[1].start()
    yield cluster
    cluster.stop()


def refused_sign(cluster: SignerCluster, message: bytes, request_id: str) -> grpc.aio.AioRpcError:
    """Sign at signer 1 with a fresh commitment of its own; the call must be refused."""

    async def run() -> grpc.aio.AioRpcError:
        channel = secure_channel(cluster.signers[1].address, cluster.coordinator_tls, "signer-1")
        try:
            stub = signer_pb2_grpc.SignerStub(channel)
            batch = await stub.Commit(signer_pb2.CommitRequest(count=1))
            own = decode_signing_commitment(batch.commitments[0])
            other = commit(cluster.shares[1]).commitment
            request = signer_pb2.SignRequest(
                message=message,
                commitment_list=encode_commitment_list([own, other]),
                evidence=evidence_for("svc"),
                request_id=request_id,
            )
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Sign(request)
            return caught.value
        finally:
            await channel.close()

    return asyncio.run(run())


def records(cluster: SignerCluster, request_id: str) -> dict[str, dict[str, object]]:
    """event -> data of this request's records in signer 1's audit log (a valid chain)."""
    path = cluster.directory / "signer-1" / "audit.jsonl"
    assert verify_log(path).ok
    found: dict[str, dict[str, object]] = {}
    for line in path.read_bytes().splitlines():
        record = json.loads(line)
        if record["data"].get("request_id") == request_id:
            found[record["event"]] = record["data"]
    return found


def audit_text(cluster: SignerCluster) -> str:
    return Path(cluster.directory / "signer-1" / "audit.jsonl").read_text()


def group_key(cluster: SignerCluster) -> bytes:
    assert cluster.package is not None
    return cluster.package.group_public_key


def test_a_refusal_whose_claims_trip_the_secret_filter_is_still_recorded(
    cluster: SignerCluster,
) -> None:
    """A `sub` shaped like a JWT used to make the request's record fail, and with it the
    refusal record: the refusal escaped the log. Now both are written, the JWT as a reference."""
    request_id = str(uuid.uuid4())
    refused = refused_sign(cluster, token_message(group_key(cluster), subject=JWT), request_id)
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
    assert (refused.details() or "").startswith("guard:subject_mismatch")
    written = records(cluster, request_id)
    assert written["refusal"]["rule"] == "guard:subject_mismatch"
    claims = written["sign_request"]["claims"]
    assert isinstance(claims, dict)
    assert claims["sub"] == f"[redacted {token_ref(JWT)}]"
    assert JWT not in audit_text(cluster)


def test_a_refusal_detail_holding_a_private_key_is_recorded_redacted(
    cluster: SignerCluster,
) -> None:
    """The guard quotes the offending claim in its detail; a private key there used to make
    the refusal record itself fail."""
    request_id = str(uuid.uuid4())
    message = token_message(group_key(cluster), iss=PRIVATE_KEY)
    refused = refused_sign(cluster, message, request_id)
    assert (refused.details() or "").startswith("guard:issuer")
    refusal = records(cluster, request_id)["refusal"]
    assert refusal["rule"] == "guard:issuer"
    assert str(refusal["detail"]).startswith("[redacted sha256:")
    assert "MC4CAQAw" not in audit_text(cluster)


def test_a_request_id_shaped_like_a_token_is_recorded_as_a_reference(
    cluster: SignerCluster,
) -> None:
    unique = uuid.uuid4().hex
    refused_sign(cluster, token_message(group_key(cluster), subject="other"), f"{JWT}.{unique}")
    written = records(cluster, f"[redacted {token_ref(JWT)}].{unique}")
    assert written["refusal"]["rule"] == "guard:subject_mismatch"
    assert "sign_request" in written
    assert JWT not in audit_text(cluster)


def deeply_nested_message(key: bytes, depth: int) -> bytes:
    header = base64.urlsafe_b64encode(json.dumps(header_for(key)).encode()).rstrip(b"=")
    claims = b'{"sub":' + b"[" * depth + b"]" * depth + b"}"
    return header + b"." + base64.urlsafe_b64encode(claims).rstrip(b"=")


def test_a_deeply_nested_message_still_gets_a_refusal_record(cluster: SignerCluster) -> None:
    """Nesting deeper than Python's stack used to escape as a RecursionError before any record
    was made; now it is a message the guard refuses, on the record."""
    request_id = str(uuid.uuid4())
    message = deeply_nested_message(group_key(cluster), 5000)
    assert len(message) < 16 * 1024  # within the signing-input limit: only the depth is odd
    refused = refused_sign(cluster, message, request_id)
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
    assert (refused.details() or "").startswith("guard:not_a_token")
    written = records(cluster, request_id)
    assert written["refusal"]["rule"] == "guard:not_a_token"
    assert written["sign_request"]["claims"] == {"unparseable": "claims is not JSON"}
