"""Three (and five) real signer processes and a coordinator, over gRPC with mTLS on loopback."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from prometheus_client import REGISTRY

from extauthz.dev.settings import ISSUER
from signer.coordinator import Coordinator, CoordinatorSettings, QuorumUnavailable, SigningRefused
from signer.frost import commit
from signer.frost.encoding import decode_signing_commitment, encode_commitment_list
from signer.proto import signer_pb2, signer_pb2_grpc
from signer.tls import secure_channel
from signer.token import compact, kid_for
from tests.signer.harness import SignerCluster, evidence_for, token_message


@pytest.fixture
def three(tmp_path: Path) -> Iterator[SignerCluster]:
    cluster = SignerCluster(tmp_path, 2, 3)
    cluster.start()
    yield cluster
    cluster.stop()


def coordinator_for(cluster: SignerCluster, **settings: float) -> Coordinator:
    return Coordinator(
        endpoints=cluster.endpoints(),
        tls=cluster.coordinator_tls,
        threshold=cluster.threshold,
        settings=CoordinatorSettings(**settings),  # type: ignore[arg-type]
    )


def test_three_signers_make_tokens_that_verify(three: SignerCluster) -> None:
    group_key = three.package.group_public_key
    public_key = Ed25519PublicKey.from_public_bytes(group_key)

    async def run() -> set[tuple[int, ...]]:
        coordinator = coordinator_for(three)
        await coordinator.start()
        assert coordinator.packages == {kid_for(group_key): three.package}
        used = set()
        try:
            for _ in range(30):
                message = token_message(group_key)
                outcome = await coordinator.sign(message, evidence=evidence_for("svc"))
                public_key.verify(outcome.signature, message)
                claims = jwt.decode(
                    compact(message, outcome.signature),
                    public_key,
                    algorithms=["EdDSA"],
                    audience="https://api.internal",
                    issuer=ISSUER,
                )
                assert claims["sub"] == "svc"
                used.add(outcome.signers)
        finally:
            await coordinator.close()
        return used

    used = asyncio.run(run())
    assert all(len(s) == 2 for s in used)


def test_guard_refusal_reaches_the_coordinator_with_its_rule(three: SignerCluster) -> None:
    async def run() -> None:
        coordinator = coordinator_for(three)
        await coordinator.start()
        try:
            with pytest.raises(SigningRefused, match="guard:issuer") as caught:
                await coordinator.sign(
                    token_message(three.package.group_public_key, iss="https://evil"),
                    evidence=evidence_for("svc"),
                )
            assert set(caught.value.refusals) <= {1, 2, 3}
            with pytest.raises(SigningRefused, match="evidence_invalid"):
                await coordinator.sign(
                    token_message(three.package.group_public_key),
                    evidence=signer_pb2.Evidence(kind="oidc_token", value=b"forged"),
                )
        finally:
            await coordinator.close()

    asyncio.run(run())


def test_a_commitment_is_used_once(three: SignerCluster) -> None:
    """Sign twice against the same commitment: the second is refused, whatever the message."""

    async def run() -> None:
        files = three.coordinator_tls
        channels = {
            i: secure_channel(p.address, files, f"signer-{i}") for i, p in three.signers.items()
        }
        stubs = {i: signer_pb2_grpc.SignerStub(c) for i, c in channels.items()}
        try:
            batches = {i: await stubs[i].Commit(signer_pb2.CommitRequest(count=1)) for i in (1, 2)}
            commitments = sorted(
                (decode_signing_commitment(b.commitments[0]) for b in batches.values()),
                key=lambda c: c.identifier,
            )
            request = signer_pb2.SignRequest(
                message=token_message(three.package.group_public_key),
                commitment_list=encode_commitment_list(commitments),
                evidence=evidence_for("svc"),
            )
            await stubs[1].Sign(request)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stubs[1].Sign(request)
            assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "commitment_unknown" in (caught.value.details() or "")
            # A commitment this signer never issued is refused the same way.
            forged = [commit(three.shares[0]).commitment, commitments[1]]
            request.commitment_list = encode_commitment_list(forged)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stubs[1].Sign(request)
            assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        finally:
            for channel in channels.values():
                await channel.close()

    asyncio.run(run())


def test_only_the_coordinator_may_call(three: SignerCluster) -> None:
    async def run() -> None:
        files = three.pki["signer-2"]  # a signer's certificate: valid, but not the coordinator
        channel = secure_channel(three.signers[1].address, files, "signer-1")
        try:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await signer_pb2_grpc.SignerStub(channel).Commit(signer_pb2.CommitRequest(count=1))
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        finally:
            await channel.close()

    asyncio.run(run())


def fault_count(signer: int, reason: str) -> float:
    value = REGISTRY.get_sample_value(
        "keymint_signer_faults_total", {"signer": str(signer), "reason": reason}
    )
    return value or 0.0


def test_faults_during_1000_signatures(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """2-of-5: one signer killed, one hung, one returning wrong shares; the other two carry on."""
    cluster = SignerCluster(tmp_path, 2, 5, faulty=[5])
    cluster.start()
    caplog.set_level(logging.WARNING, logger="signer.coordinator")
    wrong_before = fault_count(5, "invalid_share")
    group_key = cluster.package.group_public_key
    public_key = Ed25519PublicKey.from_public_bytes(group_key)

    async def run() -> tuple[int, list[float]]:
        coordinator = coordinator_for(cluster, attempt_timeout=0.5)
        await coordinator.start()
        failures = 0
        try:
            for i in range(1000):
                if i == 250:
                    cluster.signers[3].kill()
                if i == 500:
                    cluster.signers[4].hang()
                # A caller of its own each time: one credential backs a bounded number of mints.
                message = token_message(group_key, subject=f"svc-{i}")
                try:
                    outcome = await coordinator.sign(
                        message, evidence=evidence_for(f"svc-{i}"), timeout=5.0
                    )
                    public_key.verify(outcome.signature, message)
                except QuorumUnavailable:
                    failures += 1
            # Fewer than t alive: every request fails, within its deadline, saying why.
            cluster.signers[2].kill()
            elapsed = []
            for _ in range(20):
                started = time.monotonic()
                with pytest.raises(QuorumUnavailable, match="signing quorum unavailable"):
                    await coordinator.sign(
                        token_message(group_key), evidence=evidence_for("svc"), timeout=1.0
                    )
                elapsed.append(time.monotonic() - started)
        finally:
            await coordinator.close()
        return failures, elapsed

    try:
        failures, elapsed = asyncio.run(run())
    finally:
        cluster.stop()
    assert failures == 0
    assert all(e < 1.0 for e in elapsed), elapsed
    assert fault_count(5, "invalid_share") > wrong_before
    named = caplog.text
    assert "signer 5" in named
    assert "invalid signature share" in named
    assert "signer 3" in named
    assert "signer 4" in named


def test_a_wrong_vault_secret_stops_the_signer_at_start(tmp_path: Path) -> None:
    cluster = SignerCluster(tmp_path, 2, 3)
    process = cluster.signers[1]
    process.env["KEYMINT_VAULT_PASSPHRASE"] = "not the passphrase"
    with pytest.raises(RuntimeError, match="exited"):
        process.start()
    assert process.process is not None
    assert process.process.wait(timeout=10) == 2
    log = process.log.read_text()
    assert "signer: " in log
    assert "wrong passphrase" in log
    assert "not the passphrase" not in log
