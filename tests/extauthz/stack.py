"""The gateway with everything real around it: signer processes composed with the gateway's own
evidence checker, a local OIDC issuer in GitHub's shape, and test certificates for mTLS callers.

The gateway runs in the test's event loop (so tests can reach into it) and is reached as Envoy
reaches it: over mTLS with Envoy's client certificate from the Check port's dev CA. The signers are
separate processes that re-verify every caller's evidence against the same policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from envoy.config.core.v3.address_pb2 import Address, SocketAddress
from envoy.service.auth.v3 import external_auth_pb2_grpc
from envoy.service.auth.v3.attribute_context_pb2 import AttributeContext
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse

from extauthz.app import build_gateway
from extauthz.config import GatewaySettings
from extauthz.gateway import Gateway
from extauthz.grpc_edge import start_grpc
from signer.devca import (
    TlsFiles,
    dns_name,
    envoy_name,
    gateway_name,
    make_check_port_pki,
    spiffe_id,
    tls_files,
)
from signer.endorsement import TrustRoot
from tests.helpers.certs import CertificateAuthority, IssuedCertificate, pem
from tests.helpers.oidc_issuer import LocalOidcIssuer
from tests.signer.harness import SignerCluster

TRUST_DOMAIN = "prod.test"
ISSUER = "https://keymint.test"
OIDC_AUDIENCE = "https://keymint.test/ci"
DEPLOY = "https://deploy.internal"
ORDERS = "https://orders.internal"
SCOPES = "deploy:read deploy:write orders:read"


def policy_document(oidc_issuer: str) -> dict[str, Any]:
    return {
        "version": 1,
        "roles": {
            "deployer": {"scopes": ["deploy:read", "deploy:write"], "max_ttl_seconds": 600},
            "orders-reader": {"scopes": ["orders:read"], "max_ttl_seconds": 900},
        },
        "audiences": {
            DEPLOY: {"route_keys": ["deploy"]},
            ORDERS: {"route_keys": ["orders"]},
        },
        "bindings": [
            {
                "name": "octo-repo-deploys",
                "role": "deployer",
                "match": {
                    "kind": "github_actions",
                    "issuer": oidc_issuer,
                    "claims": {
                        "repository_id": "74",
                        "repository_owner_id": "65",
                        "ref": "refs/heads/main",
                        "environment": "prod",
                    },
                },
                "routes": {"audiences": [DEPLOY]},
            },
            {
                "name": "shop-reads-orders",
                "role": "orders-reader",
                "match": {"kind": "spiffe", "ids": [f"spiffe://{TRUST_DOMAIN}/ns/shop/sa/*"]},
                "routes": {"audiences": [ORDERS]},
            },
        ],
    }


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


def validity_now() -> tuple[datetime, datetime]:
    """Certificates valid today (the identity tests' helpers default to a fixed future date)."""
    now = datetime.now(UTC)
    return now - timedelta(hours=1), now + timedelta(days=1)


def valid_now() -> dict[str, datetime]:
    not_before, not_after = validity_now()
    return {"not_before": not_before, "not_after": not_after}


def root_ca(trust_domain: str) -> CertificateAuthority:
    not_before, not_after = validity_now()
    return CertificateAuthority.root(trust_domain, not_before=not_before, not_after=not_after)


def check_request(
    *,
    bearer: str | None = None,
    certificate: IssuedCertificate | None = None,
    route_key: str = "deploy",
    host: str = "api.internal",
    path: str = "/v1/things",
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    principal: str = "",
) -> CheckRequest:
    all_headers = dict(headers or {})
    if bearer is not None:
        all_headers["authorization"] = f"Bearer {bearer}"
    source = AttributeContext.Peer(
        address=Address(socket_address=SocketAddress(address="127.0.0.1", port_value=40000)),
        principal=principal,
    )
    if certificate is not None:
        source.certificate = urllib.parse.quote(certificate.pem.decode(), safe="")
    return CheckRequest(
        attributes=AttributeContext(
            source=source,
            request=AttributeContext.Request(
                http=AttributeContext.HttpRequest(
                    method=method, host=host, path=path, headers=all_headers, protocol="HTTP/1.1"
                )
            ),
            context_extensions={"route": route_key},
        )
    )


def write_trust_root(directory: Path, *group_public_keys: bytes, issuer: str = ISSUER) -> Path:
    """The trust root operators pin: the issuer and the first group key(s), as JSON."""
    path = directory / "trust-root.json"
    path.write_text(json.dumps(TrustRoot(issuer, group_public_keys).to_document()))
    return path


def check_port_pki(directory: Path) -> dict[str, TlsFiles]:
    """The Check port's dev CA, the gateway's server certificate and Envoy's client certificate
    (made once per directory)."""
    check = directory / "check-pki"
    if not (check / "ca.pem").exists():
        make_check_port_pki(check)
    return {name: tls_files(check, name) for name in (gateway_name(), envoy_name())}


def check_port_env(directory: Path, listen: str = "127.0.0.1:0") -> dict[str, str]:
    """The gateway's mTLS Check port: only Envoy's certificate from the Check port's CA."""
    pki = check_port_pki(directory)
    server = pki[gateway_name()]
    return {
        "KEYMINT_GRPC_LISTEN": listen,
        "KEYMINT_CHECK_TLS_CERT": str(server.cert),
        "KEYMINT_CHECK_TLS_KEY": str(server.key),
        "KEYMINT_CHECK_CLIENT_CA": str(server.ca),
        "KEYMINT_CHECK_ALLOWED_CLIENTS": spiffe_id(envoy_name()),
    }


def envoy_channel(directory: Path, address: str) -> grpc.aio.Channel:
    """A channel to the gateway's Check port as Envoy: its client certificate, the gateway's
    server certificate checked against the Check port's CA."""
    ca, cert, key = check_port_pki(directory)[envoy_name()].read()
    credentials = grpc.ssl_channel_credentials(ca, key, cert)
    override = [("grpc.ssl_target_name_override", dns_name(gateway_name()))]
    return grpc.aio.secure_channel(address, credentials, options=override)


def stack_env(directory: Path, oidc_issuer: str, cluster: SignerCluster) -> dict[str, str]:
    policy = directory / "policy.json"
    policy.write_text(json.dumps(policy_document(oidc_issuer)))
    return {
        **check_port_env(directory),
        "KEYMINT_ISSUER": ISSUER,
        "POLICY_FILE": str(policy),
        "ALLOWED_SCOPES": SCOPES,
        "KEYMINT_OIDC_ISSUERS": oidc_issuer,
        "KEYMINT_OIDC_AUDIENCES": OIDC_AUDIENCE,
        "KEYMINT_OIDC_ALLOW_HTTP": "true",
        "KEYMINT_SPIFFE_BUNDLES": f"{TRUST_DOMAIN}={directory / 'trust-bundle.pem'}",
        "KEYMINT_TLS_DIR": str(directory / "pki"),
        "KEYMINT_AUDIT_LOG": str(directory / "gateway-audit.jsonl"),
        "KEYMINT_STATE_DIR": str(directory / "gateway-state"),
        "KEYMINT_HTTP_LISTEN": "127.0.0.1:0",
        "KEYMINT_EVIDENCE_CHECKER": "extauthz.guard_checker:from_env",
        "TOKEN_MAX_TTL_SECONDS": "3600",
    }


@asynccontextmanager
async def running_stack(
    directory: Path, *, oidc_issuer: LocalOidcIssuer | None = None, **overrides: str
) -> AsyncIterator[Stack]:
    """The stack; `oidc_issuer`, a started GitHub-shaped issuer the caller owns, is used instead
    of a fresh one (so settings written beforehand, an issuers file, can name it)."""
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
        **stack_env(directory, issuer.issuer, cluster),
        "KEYMINT_TRUST_ROOT": str(root),
        **overrides,
    }
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
