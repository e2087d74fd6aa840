"""The gateway in the caller's own event loop, with signer processes around it: for benchmarks
and tests that reach into the gateway. The gateway is reached as Envoy reaches it, over mTLS with
Envoy's client certificate from the Check port's dev CA; the signers are separate processes that
re-verify every caller's evidence against the same policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from envoy.service.auth.v3 import external_auth_pb2_grpc
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse

from extauthz.config import GatewaySettings
from extauthz.dev.calls import envoy_channel
from extauthz.dev.certs import CertificateAuthority, IssuedCertificate, pem
from extauthz.dev.github import LocalOidcIssuer
from extauthz.dev.settings import (
    ISSUER,
    OIDC_AUDIENCE,
    TRUST_DOMAIN,
    root_ca,
    stack_env,
    validity_now,
    write_trust_root,
)
from extauthz.dev.signers import SignerCluster
from extauthz.server.app import build_gateway
from extauthz.server.gateway import Gateway
from extauthz.server.grpc_edge import start_grpc


@dataclass
class Stack:
    issuer: LocalOidcIssuer
    cluster: SignerCluster
    gateway: Gateway
    stub: external_auth_pb2_grpc.AuthorizationStub
    ca: CertificateAuthority
    env: Mapping[str, str]

    async def check(self, request: CheckRequest) -> CheckResponse:
        response: CheckResponse = await self.stub.Check(request, timeout=10)
        return response

    def svid(self, path: str) -> IssuedCertificate:
        not_before, not_after = validity_now()
        return self.ca.issue_svid(
            f"spiffe://{TRUST_DOMAIN}{path}", not_before=not_before, not_after=not_after
        )


@asynccontextmanager
async def running_stack(
    directory: Path,
    *,
    oidc_issuer: LocalOidcIssuer | None = None,
    unset: Collection[str] = (),
    **overrides: str,
) -> AsyncIterator[Stack]:
    """The stack; `oidc_issuer`, a started GitHub-shaped issuer the caller owns, is used instead
    of a fresh one (so settings written beforehand, an issuers file, can name it). `unset` names
    settings of the stack's own that the gateway and the signers must not have at all
    (`POLICY_FILE`, for a Rego policy that decides alone)."""
    issuer = oidc_issuer or LocalOidcIssuer(clock=time.time, audience=OIDC_AUDIENCE)
    if oidc_issuer is None:
        await issuer.start()
    ca = root_ca(TRUST_DOMAIN)
    (directory / "trust-bundle.pem").write_bytes(pem(ca.certificate))
    cluster = SignerCluster(directory, 2, 3)
    assert cluster.package is not None
    root = write_trust_root(
        directory,
        cluster.package.group_public_key,
        issuer=overrides.get("KEYMINT_ISSUER", ISSUER),
    )
    env = {
        **stack_env(directory, issuer.issuer),
        "KEYMINT_TRUST_ROOT": str(root),
        **overrides,
    }
    for name in unset:
        env.pop(name, None)
    for process in cluster.signers.values():
        process.env.update(env)
        process.env["KEYMINT_ISSUER"] = env["KEYMINT_ISSUER"]
    await asyncio.to_thread(cluster.start)
    settings = GatewaySettings.from_env(
        {
            **env,
            "KEYMINT_SIGNERS": ",".join(
                f"{i}={p.address}" for i, p in sorted(cluster.signers.items())
            ),
        }
    )
    gateway = await build_gateway(settings)
    # As `extauthz serve` does: keep the shared state synced, or it goes stale and refuses.
    syncing = asyncio.create_task(gateway.state.run())
    server, port, _health = await start_grpc(gateway.pipeline, settings.check_port)
    channel = envoy_channel(directory, f"127.0.0.1:{port}")
    try:
        yield Stack(
            issuer,
            cluster,
            gateway,
            external_auth_pb2_grpc.AuthorizationStub(channel),
            ca,
            env,
        )
    finally:
        await channel.close()
        await server.stop(grace=None)
        syncing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await syncing
        await gateway.close()
        await asyncio.to_thread(cluster.stop)
        if oidc_issuer is None:
            await issuer.stop()
