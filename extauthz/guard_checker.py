"""The gateway's identity and policy code, run again inside each signer as its evidence checker.

A signer process is composed with it by name at start-up
(`KEYMINT_EVIDENCE_CHECKER=extauthz.guard_checker:from_env`), so identity verification and policy
exist once, in this package, while `signer` never imports it. For each message the signer is asked
to sign, the checker takes the policy version the gateway decided under (refusing one it does not
hold), verifies the caller's own credential, and evaluates that policy on the same request the
gateway evaluated: route, headers, the request's attributes (addresses, body, ...), and the
audience, scopes and lifetime asked for. The guard then holds the token's claims against that
answer.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Mapping

import aiohttp

from extauthz.config import GATEWAY_SETTINGS, GatewaySettings, SettingsError
from extauthz.identity import IdentityError
from extauthz.model import Identity, Route
from extauthz.policy import AuthzRequest, Denial, PolicyEngine, RequestAttributes
from extauthz.policy.attributes import AttributesError
from extauthz.policy.versions import DEFAULT_OVERLAP_SECONDS, PolicyVersions
from extauthz.server.app import build_identifier, build_policy_engine
from extauthz.server.claims import provenance_claims
from extauthz.server.pipeline import Identifier
from signer.guard import (
    EVIDENCE_CERTIFICATE,
    EVIDENCE_OIDC_TOKEN,
    EvidenceDecision,
    GuardEvidence,
    GuardRefusal,
)
from signer.settings import Kind, Problem, Problems, Setting, schema_of


class GatewayEvidenceChecker:
    def __init__(
        self,
        *,
        identifier: Identifier,
        engine: PolicyEngine,
        versions: PolicyVersions | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        """`session`, if given, is the checker's own (issuers' keys are fetched with it): `close`
        closes it."""
        self._identifier = identifier
        self._engine = engine
        self._versions = versions or PolicyVersions(engine)
        self._session = session

    async def close(self) -> None:
        """The signer calls this when it stops."""
        if self._session is not None:
            await self._session.close()

    async def check(self, evidence: GuardEvidence, now: float) -> EvidenceDecision:
        snapshot = self._versions.snapshot_for(evidence.policy_sha256)
        if snapshot is None:
            named = evidence.policy_sha256[:12] or "none"
            raise GuardRefusal(
                "policy_version",
                f"the request was decided under policy {named!r}; this signer holds "
                f"{self._versions.current.digest[:12]!r}",
            )
        identity = await self._verify(evidence)
        try:
            # What this signer's settings let policy read, whatever the gateway sent.
            sent = RequestAttributes.from_json(evidence.request_attributes)
            attributes = self._engine.readable_attributes(sent)
        except AttributesError as exc:
            raise GuardRefusal("evidence_invalid", str(exc)) from None
        route = Route(
            host=evidence.host,
            path=evidence.path,
            method=evidence.method,
            context_extensions=dict(evidence.context_extensions),
        )
        request = AuthzRequest(
            identity,
            route,
            audience=evidence.requested_audience or None,
            scopes=evidence.requested_scopes,
            ttl_seconds=evidence.requested_ttl_seconds or None,
            headers=dict(evidence.headers),
            attributes=attributes,
        )
        outcome = self._engine.evaluate(request, snapshot)
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
            credential_id=credential_id(evidence, identity),
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


def credential_id(evidence: GuardEvidence, identity: Identity) -> bytes:
    """What names this credential for its budget, however it was encoded: the certificate's DER
    SHA-256, or the SHA-256 of the token's decoded claims (the bytes its issuer signed)."""
    if identity.certificate_sha256 is not None:
        return identity.certificate_sha256
    payload = evidence.value.split(b".")[1]  # verified above: a compact JWS
    return hashlib.sha256(base64.urlsafe_b64decode(payload + b"=" * (-len(payload) % 4))).digest()


def from_env(env: Mapping[str, str]) -> GatewayEvidenceChecker:
    """The factory a signer process names: the same settings the gateway reads, plus
    KEYMINT_POLICY_OVERLAP_SECONDS (how long a replaced policy version is still honoured)."""
    settings = GatewaySettings.from_env(env)
    engine, _policy, _rego = build_policy_engine(settings)
    versions = PolicyVersions(engine, overlap_seconds=_overlap_seconds(env))
    session = aiohttp.ClientSession()  # last: nothing after it can fail and leave it open
    return GatewayEvidenceChecker(
        identifier=build_identifier(settings, session, time.time),
        engine=engine,
        versions=versions,
        session=session,
    )


# The settings this checker reads, for `signer check-config` and a signer's config file: the
# gateway's, and how long a replaced policy version is honoured.
SETTINGS = (
    *GATEWAY_SETTINGS,
    Setting("KEYMINT_POLICY_OVERLAP_SECONDS", Kind.NUMBER, "300"),
)


def check_config(env: Mapping[str, str]) -> list[Problem]:
    """Every problem with the settings and files this checker would read in a signer."""
    from extauthz.check_config import file_problems_of

    p = Problems(schema_of(SETTINGS), (SettingsError,))
    p.attempt(lambda: _overlap_seconds(env), None)
    settings = p.attempt(lambda: GatewaySettings.from_env(env), None)
    if settings is not None:
        p.extend(file_problems_of(settings, serving=False))
    return list(p)


def _overlap_seconds(env: Mapping[str, str]) -> float:
    raw = env.get("KEYMINT_POLICY_OVERLAP_SECONDS", "").strip()
    if not raw:
        return DEFAULT_OVERLAP_SECONDS
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError("KEYMINT_POLICY_OVERLAP_SECONDS", f"{raw!r} is not a number") from None
    if not 0 <= value <= 86400:
        raise SettingsError("KEYMINT_POLICY_OVERLAP_SECONDS", f"{raw} is not within 0..86400")
    return value
