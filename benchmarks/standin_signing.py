"""Signing without the gateway: a stand-in for the gateway's evidence checker, and the token
messages and evidence it accepts. make bench-sign and bench-scale measure the signers' own cost
with it (the real checker's cost is in bench-check's new credentials); the signer tests compose
it into signer processes by name (KEYMINT_EVIDENCE_CHECKER=benchmarks.standin_signing:factory).

Evidence of kind "oidc_token" whose value is `test:<subject>` is accepted for that subject, with
the audience and scopes below; anything else is refused as evidence_invalid. A signer composed
with it signs for anyone who can reach it: never outside a benchmark or a test.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from pathlib import Path

from extauthz.dev.settings import ISSUER
from extauthz.dev.signers import SignerCluster
from signer.guard import EvidenceDecision, GuardEvidence, GuardRefusal
from signer.proto import signer_pb2
from signer.token import header_for, signing_input

STAND_IN_CHECKER = "benchmarks.standin_signing:factory"
REPO = Path(__file__).resolve().parent.parent
AUDIENCE = "https://api.internal"
SCOPES = frozenset({"read", "write"})


class StandInEvidenceChecker:
    def check(self, evidence: GuardEvidence, now: float) -> EvidenceDecision:
        if evidence.kind != "oidc_token" or not evidence.value.startswith(b"test:"):
            raise GuardRefusal("evidence_invalid", "not test evidence")
        return EvidenceDecision(
            subject=evidence.value[5:].decode(),
            audiences=frozenset({AUDIENCE}),
            scopes=SCOPES,
            max_ttl_seconds=900,
        )


def factory(env: Mapping[str, str]) -> StandInEvidenceChecker:
    return StandInEvidenceChecker()


def stand_in_cluster(directory: Path, t: int, n: int) -> SignerCluster:
    """n signer processes holding a dealer's shares, their guards composed with this checker."""
    cluster = SignerCluster(directory, t, n, evidence_checker=STAND_IN_CHECKER)
    for process in cluster.signers.values():  # so that they can import this module
        process.env["PYTHONPATH"] = str(REPO)
    return cluster


def token_message(
    group_public_key: bytes, *, subject: str = "svc", now: int | None = None, **overrides: object
) -> bytes:
    now = int(time.time()) if now is None else now
    claims: dict[str, object] = {
        "iss": ISSUER,
        "sub": subject,
        "aud": "https://api.internal",
        "scope": "read",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": str(uuid.uuid4()),
    }
    claims.update(overrides)
    return signing_input(header_for(group_public_key), claims)


def evidence_for(subject: str = "svc") -> signer_pb2.Evidence:
    return signer_pb2.Evidence(kind="oidc_token", value=f"test:{subject}".encode())
