"""A gateway started before its dependencies: it serves at once, says what it waits for, and is
ready within 2 s of them coming up, with no restart (extauthz.server.startup).

Real processes: `extauthz serve` and three signer processes (2-of-3), the gateway reached as Envoy
reaches it (its mTLS Check port, Envoy's client certificate) and as the kubelet does (/readyz).
The signers are started once to learn their ports and stopped; the gateway starts against those
ports with no signer answering, then two of them come back on the same ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from extauthz.dev.calls import check_request, envoy_channel
from extauthz.dev.gateway import GatewayProcess
from extauthz.dev.settings import (
    OIDC_AUDIENCE,
    TRUST_DOMAIN,
    root_ca,
    stack_env,
    valid_now,
    write_trust_root,
)
from extauthz.server.grpc_edge import SERVICE
from tests.conftest import REPO
from tests.helpers.certs import CertificateAuthority, pem
from tests.signer.harness import SignerCluster

READY_WITHIN_SECONDS = 2.0


@contextlib.contextmanager
def signers_down_gateway(
    directory: Path,
) -> Iterator[tuple[GatewayProcess, SignerCluster, CertificateAuthority]]:
    issuer = "https://issuer.invalid"  # no OIDC issuer: these callers present certificates
    ca = root_ca(TRUST_DOMAIN)
    (directory / "trust-bundle.pem").write_bytes(pem(ca.certificate))
    cluster = SignerCluster(directory, 2, 3)
    assert cluster.package is not None
    env = {
        **stack_env(directory, issuer),
        "KEYMINT_TRUST_ROOT": str(write_trust_root(directory, cluster.package.group_public_key)),
        "KEYMINT_OIDC_AUDIENCES": OIDC_AUDIENCE,
    }
    for signer in cluster.signers.values():
        signer.env.update(env)
    try:
        cluster.start()  # to learn their ports (kept across restarts) ...
        cluster.stop()  # ... and down before the gateway starts
        signers = ",".join(f"{i}={p.address}" for i, p in sorted(cluster.signers.items()))
        gateway = GatewayProcess(
            env={**os.environ, **env, "KEYMINT_SIGNERS": signers, "PYTHONPATH": str(REPO)},
            log=directory / "gateway.log",
        )
        gateway.start(wait_ready=False)
        try:
            yield gateway, cluster, ca
        finally:
            gateway.stop()
    finally:
        cluster.stop()


async def _health(directory: Path, port: int, services: tuple[str, ...]) -> dict[str, str]:
    channel = envoy_channel(directory, f"127.0.0.1:{port}")
    try:
        stub = health_pb2_grpc.HealthStub(channel)  # type: ignore[no-untyped-call]
        statuses = {}
        for service in services:
            answer = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            statuses[service] = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
        return statuses
    finally:
        await channel.close()


async def _check(directory: Path, port: int, request: object) -> object:
    from envoy.service.auth.v3 import external_auth_pb2_grpc

    channel = envoy_channel(directory, f"127.0.0.1:{port}")
    try:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)  # type: ignore[no-untyped-call]
        return await stub.Check(request, timeout=10)
    finally:
        await channel.close()


def test_signers_down_at_start_then_ready_within_2s_of_a_quorum_without_a_restart(
    tmp_path: Path,
) -> None:
    with signers_down_gateway(tmp_path) as (gateway, cluster, ca):
        assert gateway.process is not None
        pid = gateway.process.pid
        services = (SERVICE, "", "keymint.signers", "keymint.key_ring", "keymint.shared_state")

        # Not ready, and saying why: the HTTP probe, gRPC health per dependency, and a Check.
        status, document = gateway.readiness()
        assert status == 503, document
        assert document["status"] == "not_ready"
        assert document["reason"] == "starting"
        dependencies = document["dependencies"]
        assert dependencies["signers"]["ready"] is False
        assert "waiting for the signers to agree on a key" in dependencies["signers"]["detail"]
        assert dependencies["key_ring"]["ready"] is False
        assert dependencies["shared_state"]["ready"] is True
        health = asyncio.run(_health(tmp_path, gateway.grpc_port, services))
        assert health == {
            SERVICE: "NOT_SERVING",
            "": "NOT_SERVING",
            "keymint.signers": "NOT_SERVING",
            "keymint.key_ring": "NOT_SERVING",
            "keymint.shared_state": "SERVING",
        }
        request = check_request(
            certificate=ca.issue_svid(f"spiffe://{TRUST_DOMAIN}/ns/shop/sa/web", **valid_now()),
            route_key="orders",
        )
        denied = asyncio.run(_check(tmp_path, gateway.grpc_port, request))
        assert denied.denied_response.status.code == 503  # type: ignore[attr-defined]
        assert json.loads(denied.denied_response.body)["error"] == "not_ready"  # type: ignore[attr-defined]

        # Long enough for every back-off to reach its ceiling; the process stays up, not ready.
        time.sleep(4.0)
        assert gateway.alive()
        assert gateway.readiness()[0] == 503

        # Two of the three signers come up: a quorum. Ready within 2 s, the same process.
        cluster.signers[1].start()
        cluster.signers[2].start()
        up = time.monotonic()

        def ready_everywhere() -> bool:
            if gateway.readiness()[0] != 200:
                return False
            health = asyncio.run(_health(tmp_path, gateway.grpc_port, services))
            return set(health.values()) == {"SERVING"}

        while not ready_everywhere():
            assert time.monotonic() - up < READY_WITHIN_SECONDS, gateway.readiness()[1]
            time.sleep(0.02)
        ready_after = time.monotonic() - up
        print(f"\nready (/readyz and gRPC health) {ready_after:.2f} s after a quorum was up")
        assert gateway.alive()
        assert gateway.process.pid == pid

        status, document = gateway.readiness()
        assert document["status"] == "ready"
        assert document["dependencies"]["signers"]["ready"] is True
        assert "2 signer(s) can sign" in document["dependencies"]["signers"]["detail"]
        allowed = asyncio.run(_check(tmp_path, gateway.grpc_port, request))
        assert allowed.HasField("ok_response"), allowed  # type: ignore[attr-defined]
        log = gateway.log.read_text()
        assert "Traceback" not in log
        assert "not ready: " in log  # the reason was said, once per change


def test_without_a_quorum_the_check_and_the_jwks_are_503_not_ready(tmp_path: Path) -> None:
    """While starting, nothing that needs the key ring is served: no Check passes, and no
    verifier can cache an empty JWKS."""
    with signers_down_gateway(tmp_path) as (gateway, _cluster, _ca):
        import urllib.error
        import urllib.request

        for path in ("/.well-known/jwks.json", "/.well-known/keymint-endorsements.json"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(f"http://127.0.0.1:{gateway.http_port}{path}", timeout=5)
            assert refused.value.code == 503
            assert refused.value.headers["Cache-Control"] == "no-store"
            assert json.loads(refused.value.read())["error"] == "not_ready"
        with urllib.request.urlopen(f"http://127.0.0.1:{gateway.http_port}/healthz") as live:
            assert live.status == 200  # alive: the kubelet must not restart it
