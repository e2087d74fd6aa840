"""A whole gateway configuration whose files all exist, for tests of settings and start-up: every
setting `extauthz check-config` reads is right, and the signers it names need not be running."""

from __future__ import annotations

import json
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from extauthz.dev.settings import (
    ISSUER,
    OIDC_AUDIENCE,
    SCOPES,
    policy_document,
    root_ca,
    write_trust_root,
)
from signer.devca import make_dev_pki
from tests.helpers.certs import pem

CLOSED = "127.0.0.1:1"  # nothing listens there


def group_key() -> bytes:
    return (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )


def serving_env(directory: Path, *, signers: str | None = None) -> dict[str, str]:
    """The gateway's settings and files in `directory` (made once); `signers` the addresses."""
    directory.mkdir(parents=True, exist_ok=True)
    policy = directory / "policy.json"
    if not policy.exists():
        policy.write_text(
            json.dumps(policy_document("https://token.actions.githubusercontent.com"))
        )
        make_dev_pki(directory / "pki", [1, 2, 3])
        (directory / "bundle.pem").write_bytes(pem(root_ca("prod.test").certificate))
        write_trust_root(directory, group_key())
    return {
        "KEYMINT_ISSUER": ISSUER,
        "POLICY_FILE": str(policy),
        "ALLOWED_SCOPES": SCOPES,
        "KEYMINT_OIDC_AUDIENCES": OIDC_AUDIENCE,
        "KEYMINT_SIGNERS": signers or f"1={CLOSED},2={CLOSED},3={CLOSED}",
        "KEYMINT_TLS_DIR": str(directory / "pki"),
        "KEYMINT_TRUST_ROOT": str(directory / "trust-root.json"),
        "KEYMINT_SPIFFE_BUNDLES": f"prod.test={directory / 'bundle.pem'}",
        "KEYMINT_AUDIT_LOG": str(directory / "state" / "gateway-audit.jsonl"),
        "KEYMINT_STATE_DIR": str(directory / "state"),
        "KEYMINT_GRPC_LISTEN": f"unix:{directory / 'check.sock'}",
        "KEYMINT_HTTP_LISTEN": "127.0.0.1:0",
    }


def without_keymint(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The process environment less every keymint setting (a test's own must not leak in)."""
    return {
        key: value
        for key, value in (os.environ if environ is None else environ).items()
        if not key.startswith(("KEYMINT_", "FROST_", "TOKEN_", "POLICY_", "REGO_", "ALLOWED_"))
    }
