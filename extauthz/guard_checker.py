"""The gateway's identity and policy code, run again inside each signer as its evidence checker.

A signer process is composed with it by name at start-up
(`KEYMINT_EVIDENCE_CHECKER=extauthz.guard_checker:from_env`), so identity verification and policy
exist once, in this package, while `signer` never imports it. For each message the signer is asked
to sign, the checker verifies the caller's own credential and asks policy what it grants for the
requested audience and scopes; the guard then holds the token's claims against that answer.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import aiohttp

from extauthz.app import build_identifier, build_policy_engine
from extauthz.claims import provenance_claims
from extauthz.config import GatewaySettings
from extauthz.identity import IdentityError
from extauthz.model import Identity, Route
from extauthz.pipeline import Identifier
from extauthz.policy import AuthzRequest, Denial, PolicyEngine
from signer.guard import (
    EVIDENCE_CERTIFICATE,
    EVIDENCE_OIDC_TOKEN,
    EvidenceDecision,
    GuardEvidence,
    GuardRefusal,
)


class GatewayEvidenceChecker:
    def __init__(self, *, identifier: Identifier, engine: PolicyEngine) -> None:
        self._identifier = identifier
        self._engine = engine

    async def check(
        self,
        evidence: GuardEvidence,
        requested_audience: str,
        requested_scopes: tuple[str, ...],
        now: float,
    ) -> EvidenceDecision:
        identity = await self._verify(evidence)
        route = Route(
            host=evidence.host,
            path=evidence.path,
            method=evidence.method,
            context_extensions=dict(evidence.context_extensions),
        )
        outcome = self._engine.evaluate(
            AuthzRequest(identity, route, audience=requested_audience, scopes=requested_scopes)
        )
        if isinstance(outcome, Denial):
            raise GuardRefusal("policy_denied", f"{outcome.reason}: {outcome.detail}")
        return EvidenceDecision(
            subject=identity.subject,
            audiences=frozenset({outcome.audience}),
            scopes=frozenset(outcome.scopes),
            max_ttl_seconds=outcome.ttl_seconds,
            certificate_sha256=identity.certificate_sha256,
            credential_expires_at=identity.expires_at,
            provenance=provenance_claims(identity),
        )

    async def _verify(self, evidence: GuardEvidence) -> Identity:
        try:
            if evidence.kind == EVIDENCE_OIDC_TOKEN and self._identifier.oidc is not None:
                return await self._identifier.oidc.verify(evidence.value)
            certificates = self._identifier.certificates
            if evidence.kind == EVIDENCE_CERTIFICATE and certificates is not None:
                return certificates.verify_pem(evidence.value)
        except IdentityError as exc:
            raise GuardRefusal("evidence_invalid", f"{exc.reason}: {exc.message}") from None
        raise GuardRefusal(
            "evidence_invalid", f"this signer cannot verify {evidence.kind!r} evidence"
        )


def from_env(env: Mapping[str, str]) -> GatewayEvidenceChecker:
    """The factory a signer process names: the same settings the gateway reads."""
    settings = GatewaySettings.from_env(env)
    session = aiohttp.ClientSession()
    engine, _policy, _rego = build_policy_engine(settings)
    return GatewayEvidenceChecker(
        identifier=build_identifier(settings, session, time.time), engine=engine
    )
