"""`extauthz serve --workers 2` without Redis: two processes on one Check port and one HTTP port,
sharing revocations, rate limits and the key ring through the state directory; three real signers.

The stack starts the gateway with the `--workers 2` flag; the restart test starts it again with
KEYMINT_WORKERS=2 and no flag, so both ways of asking for workers run.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from envoy.service.auth.v3 import external_auth_pb2_grpc
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse

from extauthz.dev.calls import check_request, envoy_channel
from extauthz.dev.gateway import GatewayProcess
from extauthz.dev.github import LocalOidcIssuer
from extauthz.dev.servers import BackgroundLoop
from extauthz.dev.settings import (
    OIDC_AUDIENCE,
    TRUST_DOMAIN,
    root_ca,
    stack_env,
    valid_now,
    write_trust_root,
)
from extauthz.server.own_tokens import LEEWAY_SECONDS
from extauthz.server.workers import worker_audit_log
from tests.conftest import REPO
from tests.helpers.certs import CertificateAuthority, IssuedCertificate, pem
from tests.replicas.stack import wait_until
from tests.replicas.test_replicas import outcome
from tests.signer.harness import SignerCluster

ADMIN_TOKEN = "workers-admin-token"
WORKERS = 2
RATE_PER_SECOND = 5
RATE_BURST = 10


@dataclass
class WorkersStack:
    directory: Path
    background: BackgroundLoop
    issuer: LocalOidcIssuer
    ca: CertificateAuthority
    gateway: GatewayProcess

    def svid(self, path: str) -> IssuedCertificate:
        return self.ca.issue_svid(f"spiffe://{TRUST_DOMAIN}{path}", **valid_now())

    def check(self, request: CheckRequest) -> CheckResponse:
        """One Check on a connection of its own: the kernel picks the worker."""

        async def call() -> CheckResponse:
            address = f"127.0.0.1:{self.gateway.grpc_port}"
            async with envoy_channel(self.directory, address) as channel:
                stub = external_auth_pb2_grpc.AuthorizationStub(channel)
                response: CheckResponse = await stub.Check(request, timeout=10)
                return response

        return self.background.run(call())

    def revoke(self, subject: str) -> int:
        import urllib.request

        request = urllib.request.Request(
            f"http://127.0.0.1:{self.gateway.http_port}/admin/revoke",
            data=json.dumps({"subject": subject, "until": time.time() + 600}).encode(),
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as reply:
            status: int = reply.status
            return status

    def worker_pids(self) -> list[int]:
        assert self.gateway.process is not None
        pid = self.gateway.process.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return [int(child) for child in children]

    @property
    def audit_log(self) -> Path:
        return Path(self.gateway.env["KEYMINT_AUDIT_LOG"])

    def mints_by_worker(self) -> list[int]:
        counts = []
        for index in range(1, WORKERS + 1):
            path = worker_audit_log(self.audit_log, index)
            lines = path.read_text().splitlines() if path.exists() else []
            counts.append(sum(1 for line in lines if json.loads(line).get("event") == "mint"))
        return counts


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkersStack]:
    directory = tmp_path_factory.mktemp("workers")
    background = BackgroundLoop()
    issuer = LocalOidcIssuer(clock=time.time, audience=OIDC_AUDIENCE)
    background.run(issuer.start())
    ca = root_ca(TRUST_DOMAIN)
    (directory / "trust-bundle.pem").write_bytes(pem(ca.certificate))
    cluster = SignerCluster(directory, 2, 3)
    assert cluster.package is not None
    env = {
        **stack_env(directory, issuer.issuer),
        "KEYMINT_TRUST_ROOT": str(write_trust_root(directory, cluster.package.group_public_key)),
    }
    for signer in cluster.signers.values():
        signer.env.update(env)
    cluster.start()
    gateway_env = {
        **os.environ,
        **env,
        "PYTHONPATH": str(REPO),
        "KEYMINT_SIGNERS": ",".join(f"{i}={p.address}" for i, p in cluster.signers.items()),
        "KEYMINT_ADMIN_TOKEN_SHA256": hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest(),
        "KEYMINT_RATE_PER_SECOND": str(RATE_PER_SECOND),
        "KEYMINT_RATE_BURST": str(RATE_BURST),
    }
    gateway_env.pop("KEYMINT_WORKERS", None)  # the flag alone asks for the workers
    gateway = GatewayProcess(
        env=gateway_env, log=directory / "gateway.log", args=("--workers", str(WORKERS))
    )
    try:
        gateway.start()
        gateway.wait_ready(in_a_row=16)
        yield WorkersStack(directory, background, issuer, ca, gateway)
    finally:
        gateway.stop()
        cluster.stop()
        background.run(issuer.stop())
        background.close()


def test_both_workers_answer_on_one_port(stack: WorkersStack) -> None:
    assert len(stack.worker_pids()) == WORKERS
    for i in range(24):
        request = check_request(
            certificate=stack.svid(f"/ns/shop/sa/spread-{i}"), route_key="orders"
        )
        assert outcome(stack.check(request)) == (200, "ok")
    # Each worker minted some of them (each writes its own audit log): the kernel spread the
    # connections. All 24 on one worker would happen once in 2**23 runs.
    assert all(count > 0 for count in stack.mints_by_worker()), stack.mints_by_worker()


def test_a_revocation_through_one_worker_is_refused_by_both_within_a_second(
    stack: WorkersStack,
) -> None:
    subject = "/ns/shop/sa/revoked-by-worker"
    request = check_request(certificate=stack.svid(subject), route_key="orders")
    for _ in range(8):  # both workers hold it in their hot caches
        assert outcome(stack.check(request)) == (200, "ok")
    started = time.monotonic()
    assert stack.revoke(f"spiffe://{TRUST_DOMAIN}{subject}") == 200
    refused: list[bool] = []

    def all_refuse() -> bool:
        refused[:] = [outcome(stack.check(request))[0] == 403 for _ in range(8)]
        return all(refused)

    wait_until(all_refuse, timeout=5)
    elapsed = time.monotonic() - started
    print(f"both workers refuse {elapsed:.3f} s after the revocation")
    assert elapsed <= 1.0


def test_a_rate_limit_holds_across_workers(stack: WorkersStack) -> None:
    workflow = "octo-org/octo-repo/.github/workflows/workers.yml@refs/heads/main"
    accepted = 0
    started = time.monotonic()
    while time.monotonic() - started < 2.0:
        token = stack.issuer.mint({"jti": str(uuid.uuid4()), "workflow_ref": workflow})
        if outcome(stack.check(check_request(bearer=token, route_key="deploy")))[0] == 200:
            accepted += 1
    elapsed = time.monotonic() - started
    assert RATE_BURST <= accepted <= RATE_BURST + RATE_PER_SECOND * elapsed


def test_a_killed_worker_is_started_again(stack: WorkersStack) -> None:
    victim = stack.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    wait_until(
        lambda: len(stack.worker_pids()) == WORKERS and victim not in stack.worker_pids(),
        timeout=60,
        interval=0.2,
    )
    request = check_request(certificate=stack.svid("/ns/shop/sa/after-kill"), route_key="orders")
    wait_until(lambda: outcome(stack.check(request)) == (200, "ok"), timeout=30, interval=0.2)


def test_without_redis_revocations_and_the_key_ring_survive_a_restart(
    stack: WorkersStack,
) -> None:
    state = Path(stack.gateway.env["KEYMINT_STATE_DIR"])
    path = "/ns/shop/sa/revoked-before-restart"  # its own revocation: no earlier test's
    subject = f"spiffe://{TRUST_DOMAIN}{path}"
    asked_at = time.time()
    assert stack.revoke(subject) == 200  # until 600 s from now
    stack.gateway.stop()
    # Started again the other way: KEYMINT_WORKERS=2, no flag.
    stack.gateway.args = ()
    stack.gateway.env = {**stack.gateway.env, "KEYMINT_WORKERS": str(WORKERS)}
    stack.gateway.start()
    stack.gateway.wait_ready(in_a_row=16)
    assert len(stack.worker_pids()) == WORKERS
    # Kept past the 600 s asked: past the longest token minted before it (the default TTL, 900 s)
    # and the 30 s keymint still takes its own tokens back after their exp.
    kept = json.loads((state / "revocations.json").read_text())["subjects"][subject]
    assert kept >= asked_at + 900 + LEEWAY_SECONDS
    assert json.loads((state / "keyring.json").read_text())["active"]
    request = check_request(certificate=stack.svid(path), route_key="orders")
    for _ in range(6):
        assert outcome(stack.check(request)) == (403, "subject_revoked")
