"""A stand-in for the gateway's evidence checker, composed into test signer processes by name.

The real checker (identity verification and policy) lives in `extauthz`; signer tests need one
that is simple and still refuses: evidence of kind "oidc_token" whose value is `test:<subject>`
is accepted for that subject, anything else is refused as evidence_invalid.
"""

from __future__ import annotations

from collections.abc import Mapping

from signer.guard import EvidenceDecision, GuardEvidence, GuardRefusal

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
