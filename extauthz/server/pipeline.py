"""One Check, four phases: identify, authorize, mint, respond.

Identity: the caller's bearer OIDC token; else, when the peer is a trusted proxy, the certificate
it forwards in XFCC; else Envoy's peer certificate. A bare name (Envoy's principal, an XFCC URI)
is never an identity: signers verify certificates, not names. Authorization: every policy rule must
pass. Mint: cached, or threshold-signed. Respond: one mapping to CheckResponse.

The hot path, a credential seen before on the same route (and, with Rego, the same headers and
request attributes the policy reads), is a dictionary lookup: no JWT verification, no policy, no
signing. Anything unexpected fails closed as a denial.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse

from extauthz.identity import (
    IdentityError,
    JwtVerifier,
    MissingCredential,
    Reason,
    X509Verifier,
    XfccIdentifier,
)
from extauthz.model import Grant, Identity, Route
from extauthz.policy import (
    NO_ATTRIBUTES,
    AuthzRequest,
    Denial,
    PolicyEngine,
    RequestAttributes,
)
from extauthz.server.decision import Allow, Decision, Deny
from extauthz.server.hotcache import HotCache, HotEntry, as_hit, request_fingerprint
from extauthz.server.identitycache import IdentityCache, credential_key
from extauthz.server.limits import Limiter, LocalLimiter, RateLimiter, Revocations, rate_key
from extauthz.server.metrics import CHECK_SECONDS, DECISIONS, MINTS
from extauthz.server.mint import Minter, MintError, MintNotRecorded
from extauthz.server.own_tokens import OwnTokenVerifier, certificate_sha256, passthrough
from extauthz.server.respond import to_check_response, token_ref
from extauthz.server.tokencache import MintedToken
from signer import tracing
from signer.coordinator import QuorumUnavailable, SigningRefused
from signer.observability import clean_request_id, current_request_id, request_context

log = logging.getLogger(__name__)
DECISION_LOG = logging.getLogger("extauthz.decision")  # a name operators filter on

# The hot path's metric children, looked up once: label resolution costs more than the lookup.
_HIT = DECISIONS.labels("allow", "ok", "hit")
_HIT_SECONDS = CHECK_SECONDS.labels("hit")
_MISS_SECONDS = CHECK_SECONDS.labels("miss")

BEARER = "bearer "
NO_QUORUM = "no signing quorum"  # all a caller learns of a quorum failure
NOT_RECORDED = "audit log unavailable"  # a token that cannot be recorded is not released
STALE = "shared state unavailable"  # revocations cannot be confirmed: nothing is served


NOT_READY = Deny.unavailable(
    "not_ready",
    "keymint is not ready",
    internal="the gateway is starting: the key ring is not loaded yet (see /readyz)",
)


def _stale() -> Deny:
    return Deny.unavailable(
        "shared_state_unavailable",
        STALE,
        internal="the shared state store has not answered within the staleness bound",
    )


class Identifier:
    """Identify: the credentials of a CheckRequest, verified into one Identity."""

    def __init__(
        self,
        *,
        oidc: JwtVerifier | None = None,
        certificates: X509Verifier | None = None,
        xfcc: XfccIdentifier | None = None,
    ) -> None:
        self._oidc = oidc
        self._certificates = certificates
        self._xfcc = xfcc

    @property
    def oidc(self) -> JwtVerifier | None:
        return self._oidc

    @property
    def certificates(self) -> X509Verifier | None:
        return self._certificates

    def caller_certificate(self, request: CheckRequest) -> str:
        """The certificate the caller presented (URL-encoded PEM), for a `cnf` check: from a
        trusted proxy, the one it forwards in XFCC, never its own; else Envoy's peer's."""
        source = request.attributes.source
        if self._xfcc is not None and self._xfcc.trusts(source.principal):
            header = request.attributes.request.http.headers.get("x-forwarded-client-cert")
            return self._xfcc.forwarded_certificate(header, source.principal)
        return str(source.certificate)

    async def identify(self, request: CheckRequest) -> Identity:
        """The caller's own bearer token first; then, from a trusted proxy, the certificate it
        forwards in XFCC (the proxy's own certificate is never the caller's); from anyone else,
        the peer certificate Envoy forwards. The first failure is the one reported."""
        attributes = request.attributes
        headers = attributes.request.http.headers
        failure: IdentityError | None = None
        authorization = headers.get("authorization", "")
        if authorization[:7].lower() == BEARER and self._oidc is not None:
            try:
                return await self._oidc.verify(authorization[7:].strip())
            except IdentityError as exc:
                failure = exc
        source = attributes.source
        xfcc = headers.get("x-forwarded-client-cert")
        if self._xfcc is not None and self._xfcc.trusts(source.principal):
            try:
                return self._xfcc.forwarded_identity(xfcc, source.principal)
            except IdentityError as exc:
                raise failure or exc from None
        if self._certificates is not None and source.certificate:
            try:
                return self._certificates.verify_envoy_certificate(source.certificate)
            except IdentityError as exc:
                failure = failure or exc
        if xfcc and self._xfcc is not None:
            log.info("ignored x-forwarded-client-cert from untrusted peer %r", source.principal)
        if failure is not None:
            raise failure
        if self._certificates is not None and source.principal:
            raise IdentityError(
                Reason.CERTIFICATE_NOT_FORWARDED,
                "Envoy sent the peer's principal without its certificate: set "
                "include_peer_certificate: true on the ext_authz filter (signers verify the "
                "certificate, never a bare name)",
            )
        if authorization:
            raise MissingCredential(
                "the Authorization header is not a bearer token keymint accepts"
            )
        raise MissingCredential("no credential: present a client certificate or a bearer token")


def attribute_values(request: CheckRequest, *, per_request: bool) -> tuple[object, ...]:
    """What Envoy says about the request beyond route and headers, as policy reads it: the
    fields of `RequestAttributes`, in order (the hot cache keys on this tuple; a miss builds the
    dataclass from it). The source port, request id and time only with `per_request`: they
    change with every request or connection."""
    attributes = request.attributes
    source = attributes.source.address.socket_address
    destination = attributes.destination.address.socket_address
    http = attributes.request.http
    received = attributes.request.time
    return (
        source.address,
        source.port_value if per_request else 0,
        destination.address,
        destination.port_value,
        attributes.destination.principal,
        http.id if per_request else "",
        received.seconds if per_request else 0,
        received.nanos if per_request else 0,
        http.scheme,
        http.protocol,
        http.size,
        http.body,
        http.raw_body,
        attributes.tls_session.sni,
    )


class AuditWriter(Protocol):
    def append(self, event: str, data: Mapping[str, object] | None = None) -> Awaitable[object]: ...


class Pipeline:
    def __init__(
        self,
        *,
        identifier: Identifier,
        engine: PolicyEngine,
        minter: Minter,
        revocations: Revocations | None = None,
        rate_limiter: Limiter | RateLimiter | None = None,
        audit: AuditWriter | None = None,
        own_tokens: OwnTokenVerifier | None = None,
        clock: Callable[[], float] = time.time,
        fresh: Callable[[], bool] = lambda: True,
    ) -> None:
        """`fresh` says whether this process's revocations are recent enough to decide on
        (extauthz.server.state.SharedState.fresh); while it is False every request is a 503."""
        self._own = own_tokens
        self._identifier = identifier
        self._engine = engine
        self._minter = minter
        self._revocations = revocations or Revocations()
        self._rate: Limiter | None = (
            LocalLimiter(rate_limiter) if isinstance(rate_limiter, RateLimiter) else rate_limiter
        )
        self._fresh = fresh
        self._audit = audit
        self._clock = clock
        self.hot = HotCache()
        self.identities = IdentityCache()
        self._held: Deny | None = None
        self._writes: set[asyncio.Task[None]] = set()  # abandoned-mint records being written
        if audit is not None:
            minter.record_with(self._record_mint, abandoned=self._record_abandoned)

    @property
    def revocations(self) -> Revocations:
        return self._revocations

    def hold(self, denial: Deny) -> None:
        """Answer every Check and exchange with `denial` until `release` (start-up)."""
        self._held = denial

    def release(self) -> None:
        self._held = None

    async def check(self, request: CheckRequest) -> CheckResponse:
        started = time.perf_counter()
        if self._held is not None or not self._fresh():
            return await self._answer(request, self._held or _stale())
        # The same selection feeds the key and the Rego input: a cached allow was decided on
        # exactly the headers and attributes policy would read now.
        engine = self._engine
        headers = engine.readable_headers(request.attributes.request.http.headers)
        values: tuple[object, ...] = ()
        if engine.reads_request:  # a plain tuple on the hot path: a dataclass costs more
            values = attribute_values(request, per_request=engine.per_request_input)
        key = request_fingerprint(request, headers, values)
        generation = self.hot.generation
        if key is not None:
            entry = self.hot.get(key, self._clock())
            if entry is not None:
                revocations = self._revocations
                if not (
                    revocations.jti_revoked(entry.jti) or revocations.subject_revoked(entry.subject)
                ):
                    limited = await self._rate_limit_key(entry.rate_key, entry.subject)
                    if limited is None:
                        _HIT.inc()
                        _HIT_SECONDS.observe(time.perf_counter() - started)
                        return CheckResponse.FromString(entry.response)
                    return await self._answer(request, limited)
        attributes = NO_ATTRIBUTES
        if (
            values
        ):  # the dataclass's fields, in order (tests/extauthz/server/test_pipeline.py pins it)
            attributes = RequestAttributes(*values)  # type: ignore[arg-type]
        request_id = request_id_of(request)
        with request_context(request_id):
            decision = await self._decide_safely(request, headers, attributes)
        # The request id goes to this answer only: the hot cache's copy answers later requests,
        # as hits (its metadata says so, for Envoy's access log).
        response = to_check_response(decision, request_id=request_id)
        if isinstance(decision, Allow) and key is not None:
            self._keep(key, decision, response, generation)
        _MISS_SECONDS.observe(time.perf_counter() - started)
        return response

    def _keep(self, key: bytes, allow: Allow, response: CheckResponse, generation: int) -> None:
        """Store `allow` for later hits: the response bytes and what a hit is checked against."""
        token = allow.token
        entry = HotEntry(
            response=as_hit(response),
            fresh_until=token.expires_at - 0.1 * token.lifetime,
            jti=token.jti,
            subject=allow.identity.subject,
            rate_key=rate_key(allow.identity),
        )
        self.hot.put(key, entry, generation=generation, now=self._clock())

    async def _answer(self, request: CheckRequest, denial: Deny) -> CheckResponse:
        """A denial decided before the pipeline ran (starting, stale state, rate limited)."""
        request_id = request_id_of(request)
        with request_context(request_id):
            return to_check_response(await self._record(denial), request_id=request_id)

    async def exchange(
        self, subject_token: str, audience: str | None, scopes: tuple[str, ...]
    ) -> Decision:
        """RFC 8693 /token: the same pipeline with an explicit subject token and target."""
        if self._held is not None:
            return await self._record(self._held)
        if not self._fresh():
            return await self._record(_stale())
        try:
            oidc = self._identifier.oidc  # the exchange accepts only OIDC subject tokens
            if oidc is None:
                return await self._record(Deny.unauthenticated("unsupported", "no OIDC issuer"))
            try:
                identity = await oidc.verify(subject_token)
            except IdentityError as exc:
                return await self._record(Deny.unauthenticated(str(exc.reason), exc.message))
            route = Route(host="", path="/token", method="POST")
            return await self._authorize_and_mint(
                AuthzRequest(identity, route, audience=audience, scopes=scopes)
            )
        except Exception:
            log.exception("token exchange failed unexpectedly; denying")
            return await self._record(Deny.unavailable("internal_error", "internal error"))

    async def _decide_safely(
        self,
        request: CheckRequest,
        headers: tuple[tuple[str, str], ...],
        attributes: RequestAttributes,
    ) -> Decision:
        try:
            return await self._decide(request, headers, attributes)
        except Exception:
            log.exception("check failed unexpectedly; denying")
            return await self._record(Deny.unavailable("internal_error", "internal error"))

    async def _decide(
        self,
        request: CheckRequest,
        headers: tuple[tuple[str, str], ...],
        attributes: RequestAttributes,
    ) -> Decision:
        http = request.attributes.request.http
        route = Route(
            host=http.host,
            path=http.path,
            method=http.method,
            context_extensions=dict(request.attributes.context_extensions),
        )
        # A credential identified before (on another route): its identity, not verified again.
        credential = credential_key(request)
        identity = None if credential is None else self.identities.get(credential, self._clock())
        if identity is None:
            passed = await self._own_token(request, route)
            if passed is not None:
                return passed
            try:
                with tracing.span("extauthz.identify") as span:
                    identity = await self._identifier.identify(request)
                    tracing.annotate(span, {"keymint.identity_kind": identity.kind.value})
            except IdentityError as exc:
                return await self._record(Deny.unauthenticated(str(exc.reason), exc.message))
            if credential is not None:
                self.identities.put(credential, identity, self._clock())
        return await self._authorize_and_mint(
            AuthzRequest(identity, route, headers=dict(headers), attributes=attributes)
        )

    async def _authorize_and_mint(self, authz: AuthzRequest) -> Decision:
        identity = authz.identity
        if self._revocations.subject_revoked(identity.subject):
            return await self._record(
                Deny.forbidden("subject_revoked", "this subject has been revoked", identity)
            )
        limited = await self._rate_limit(identity)
        if limited is not None:
            return await self._record(limited)
        policy = self._engine.snapshot()
        with tracing.span("extauthz.authorize") as span:
            verdict = self._engine.judge(authz, policy)
            outcome = verdict.decision
            tracing.annotate(span, {"keymint.allowed": not isinstance(outcome, Denial)})
        if isinstance(outcome, Denial):
            denial = Deny.forbidden(str(outcome.reason), outcome.detail, identity)
            if verdict.response is not None:  # a Rego denial's own status, headers and body
                status = verdict.response.http_status or denial.status
                denial = dataclasses.replace(denial, status=status, response=verdict.response)
            return await self._record(denial)
        try:
            with tracing.span("extauthz.mint") as span:
                token, cached = await self._minter.mint(authz, outcome, policy.digest)
                if cached and self._revocations.jti_revoked(token.jti):
                    await self._minter.forget(identity, outcome)
                    token, cached = await self._minter.mint(authz, outcome, policy.digest)
                tracing.annotate(
                    span,
                    {
                        "keymint.cached": cached,
                        "keymint.signers": ",".join(map(str, token.signers)),
                    },
                )
        except QuorumUnavailable as exc:
            MINTS.labels("no_quorum").inc()
            # Which signers failed, where and why is the operator's business: log and audit.
            log.warning("no signing quorum: %s", exc)
            return await self._record(
                Deny.unavailable("no_signing_quorum", NO_QUORUM, identity, internal=str(exc))
            )
        except MintNotRecorded as exc:
            MINTS.labels("not_recorded").inc()
            log.error("%s", exc)
            return await self._record(
                Deny.unavailable("audit_unavailable", NOT_RECORDED, identity, internal=str(exc))
            )
        except SigningRefused as exc:
            MINTS.labels("refused").inc()
            denial = Deny.forbidden("signer_refused", f"signers refused: {exc.rule}", identity)
            return await self._record(dataclasses.replace(denial, internal=str(exc)))
        except MintError as exc:
            return await self._record(Deny.unauthenticated(exc.reason, exc.detail))
        if not cached:
            MINTS.labels("ok").inc()
        return await self._record(Allow(identity, outcome, token, cached, verdict.response))

    async def _own_token(self, request: CheckRequest, route: Route) -> Decision | None:
        """A keymint token presented back (e.g. the result of /token): passed through unchanged
        when valid for this route; None when the request carries no token of ours."""
        authorization = request.attributes.request.http.headers.get("authorization", "")
        if self._own is None or authorization[:7].lower() != BEARER:
            return None
        token = authorization[7:].strip()
        key = self._own.key_for(token)
        if key is None:
            return None
        audience = self._engine.audience_for(route)
        if audience is None:
            return await self._record(
                Deny.forbidden("no_audience", "this route maps to no audience in the policy")
            )
        try:
            claims = self._own.verify(
                token,
                key,
                audience,
                certificate_sha256(self._identifier.caller_certificate(request)),
            )
        except IdentityError as exc:
            return await self._record(Deny.unauthenticated(str(exc.reason), exc.message))
        allow = passthrough(token, claims)
        if not self._still_good(allow):
            return await self._record(
                Deny.forbidden("token_revoked", "this token or its subject has been revoked")
            )
        limited = await self._rate_limit(allow.identity)
        return await self._record(limited) if limited is not None else await self._record(allow)

    def _still_good(self, allow: Allow) -> bool:
        return not (
            self._revocations.jti_revoked(allow.token.jti)
            or self._revocations.subject_revoked(allow.identity.subject)
        )

    async def _rate_limit(self, identity: Identity) -> Deny | None:
        if self._rate is None:
            return None
        allowed, retry_after = await self._rate.allow(rate_key(identity))
        if allowed:
            return None
        return Deny.rate_limited("too many requests for this identity", identity, retry_after)

    async def _rate_limit_key(self, key: str, subject: str) -> Deny | None:
        """`_rate_limit` for a hot-cache hit, which holds the identity's key, not the identity."""
        if self._rate is None:
            return None
        allowed, retry_after = await self._rate.allow(key)
        if allowed:
            return None
        # The entry holds no Identity (it would keep the caller's evidence alive): the subject
        # reaches the log and the audit record as the operator's detail.
        return Deny(
            429,
            "rate_limited",
            "too many requests for this identity",
            retry_after=retry_after,
            internal=f"subject {subject} (a cached credential)",
        )

    async def _record(self, decision: Decision) -> Decision:
        """Count the decision, log it (one line, with the request id) and write a denial to the
        audit log (the minter has written each fresh mint's record before the token was released:
        `_record_mint`). A denial stands even when its record cannot be written."""
        request_id = current_request_id()
        log_decision(decision, request_id)
        if isinstance(decision, Allow):
            DECISIONS.labels("allow", "ok", "hit" if decision.cached else "miss").inc()
            return decision
        DECISIONS.labels("deny", decision.reason, "miss").inc()
        if self._audit is not None:
            try:
                await self._write(
                    "deny",
                    {
                        **({"request_id": request_id} if request_id else {}),
                        "status": decision.status,
                        "reason": decision.reason,
                        "detail": decision.detail,
                        "subject": decision.identity.subject if decision.identity else None,
                        **({"internal": decision.internal} if decision.internal else {}),
                    },
                )
            except Exception as exc:
                log.error(
                    "a %s denial (%s) could not be recorded: %s",
                    decision.status,
                    decision.reason,
                    exc,
                )
        return decision

    async def _record_mint(self, request: AuthzRequest, grant: Grant, token: MintedToken) -> None:
        identity = request.identity
        request_id = current_request_id()
        await self._write(
            "mint",
            {
                **({"request_id": request_id} if request_id else {}),
                "subject": identity.subject,
                "identity_kind": identity.kind.value,
                "rule": grant.rule,
                "audience": token.audience,
                "scope": " ".join(token.scopes),
                "jti": token.jti,
                "token_ref": token_ref(token.token),
                "signers": list(token.signers),
                "expires_at": token.expires_at,
            },
        )

    def _record_abandoned(self, jti: str, why: str) -> None:
        """The signers may have been asked to sign `jti`, and the mint gave up: say so in the audit
        log, so reconciliation can tell such a signature from one a gateway kept
        (`mint_abandoned`)."""
        request_id = current_request_id()
        data = {**({"request_id": request_id} if request_id else {}), "jti": jti, "why": why}
        task = asyncio.get_running_loop().create_task(self._write("mint_abandoned", data))
        self._writes.add(task)
        task.add_done_callback(self._written)

    def _written(self, task: asyncio.Task[None]) -> None:
        self._writes.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("an abandoned mint could not be recorded: %s", task.exception())

    async def _write(self, event: str, data: Mapping[str, object]) -> None:
        if self._audit is not None:
            await self._audit.append(event, data)


def request_id_of(request: CheckRequest) -> str:
    """Envoy's x-request-id (the same id its access log shows), or else the Check's http id."""
    http = request.attributes.request.http
    return clean_request_id(http.headers.get("x-request-id", "") or http.id)


def log_decision(decision: Decision, request_id: str) -> None:
    """One line per decision made here (a hot-cache answer is not one: Envoy's access log has
    it). Fields, never secrets: the token only as its SHA-256 reference."""
    if isinstance(decision, Allow):
        token = decision.token
        fields: dict[str, object] = {
            "decision": "allow",
            "reason": "cached_token" if decision.cached else "minted",
            "subject": decision.identity.subject,
            "audience": token.audience,
            "jti": token.jti,
            "token": token_ref(token.token),
            "signers": list(token.signers),
        }
    else:
        fields = {
            "decision": "deny",
            "status": decision.status,
            "reason": decision.reason,
            "subject": decision.identity.subject if decision.identity else "",
        }
    if request_id:
        fields["request_id"] = request_id
    DECISION_LOG.info("%s %s", fields["decision"], fields["reason"], extra={"fields": fields})
