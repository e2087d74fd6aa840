"""The local stack's settings: one trust domain, one policy, the Check port's PKI, and the
environment the gateway and the signers share (the same policy and issuers, so the signers'
guards decide as the gateway does). For development only: every key here is made on this machine.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from extauthz.dev.certs import CertificateAuthority
from signer.devca import (
    TlsFiles,
    envoy_name,
    gateway_name,
    make_check_port_pki,
    spiffe_id,
    tls_files,
)
from signer.endorsement import TrustRoot

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


def stack_env(directory: Path, oidc_issuer: str) -> dict[str, str]:
    """The gateway's and the signers' settings, with the policy written into `directory`."""
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
