"""Decide: (identity, route, requested audience/scopes/TTL) -> Grant, or Denial with a reason.

Every rule that applies must pass, in this order: a binding matches the identity; the route is
one the binding allows; the audience resolves, is declared and is one the binding allows; every
requested scope is inside ALLOWED_SCOPES and the binding's role; the TTL is clamped to the role.
Bindings are tried in file order; the first that passes every rule grants.

With a Rego policy as well, the JSON policy decides first and Rego must also allow; Rego can
only narrow the grant (fewer scopes, shorter TTL), never widen it or change its audience. A
Rego policy alone (KEYMINT_REGO_ALONE) grants what it names (`audience`, `scopes`,
`ttl_seconds`); a policy that names no scopes (opa-envoy-plugin's boolean, say) grants the
route's: Envoy's `context_extensions.audience` and `context_extensions.scopes`, never what the
caller asks for beyond them. ALLOWED_SCOPES and the default TTL cap either.

`judge` also returns what an opa-envoy-plugin decision adds to Envoy's response (headers, body,
status, dynamic metadata): the gateway's business, which signers never see.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from extauthz.model import Grant, Identity, Route
from extauthz.policy.attributes import NO_ATTRIBUTES, RequestAttributes
from extauthz.policy.model import (
    CONTEXT_AUDIENCE,
    CONTEXT_ROUTE_KEY,
    CONTEXT_SCOPES,
    AuthzRequest,
    Binding,
    Decision,
    Denial,
    DenyReason,
    Limits,
    Policy,
    PolicyError,
    normalize_host,
    request_path,
)
from extauthz.policy.rego import RegoPolicy
from extauthz.policy.rego_decision import (
    PolicyResponse,
    RegoAnswer,
    RegoEvaluationError,
    RegoUndefined,
    redact,
    redact_text,
    secrets_in,
)
from extauthz.policy.rego_input import CREDENTIAL_HEADERS, BodyError, PolicyHeaders, build_input
from extauthz.policy.reload import PolicyStore

T = TypeVar("T")
_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PolicySnapshot:
    """The policies in force at one instant, and the digest that names that version.

    The gateway sends the digest with every sign request; a signer's guard evaluates the request
    under the snapshot with the same digest, so both decide with exactly the same policy text.
    """

    policy: Policy | None
    rego: RegoPolicy | None
    digest: str


@dataclass(frozen=True, slots=True)
class Verdict:
    """A decision, and what a Rego decision adds to the gateway's response when it stands: an
    allow's decorations when the request is granted, a denial's when Rego denied it."""

    decision: Decision
    response: PolicyResponse | None = None


def policy_digest(policy_sha256: str | None, rego_sha256: str | None) -> str:
    """One name for a (JSON policy, Rego policy) pair of file contents: SHA-256, hex."""
    joined = f"json:{policy_sha256 or '-'}\nrego:{rego_sha256 or '-'}\n"
    return hashlib.sha256(joined.encode()).hexdigest()


class PolicyEngine:
    """The authorize step: a JSON policy, a Rego policy, or both (each fixed or reloadable)."""

    def __init__(
        self,
        *,
        limits: Limits,
        policy: Policy | PolicyStore[Policy] | None = None,
        rego: RegoPolicy | PolicyStore[RegoPolicy] | None = None,
        headers: PolicyHeaders | None = None,
        per_request_input: bool = False,
    ) -> None:
        if policy is None and rego is None:
            raise PolicyError("no policy configured: give a JSON policy, a Rego policy or both")
        self._limits = limits
        self._policy = policy
        self._rego = rego
        self._headers = headers or PolicyHeaders.default()
        self._per_request = per_request_input

    @property
    def reads_request(self) -> bool:
        """Whether policy reads the request beyond its route: a Rego policy does (headers,
        addresses, body), the JSON policy does not."""
        return self._rego is not None

    @property
    def per_request_input(self) -> bool:
        """Whether a Rego policy may read what identifies one request: the source port, Envoy's
        request id and the request's time (KEYMINT_POLICY_PER_REQUEST_INPUT)."""
        return self._per_request and self._rego is not None

    def readable_headers(self, headers: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
        """The request headers policy can read, sorted: exactly the Rego input's headers, and
        what the hot cache must key on. The JSON policy reads none, so without Rego: ()."""
        return () if self._rego is None else self._headers.select(headers)

    def readable_attributes(self, attributes: RequestAttributes) -> RequestAttributes:
        """The request attributes policy can read: none without Rego, and the per-request ones
        (source port, request id, time) only with KEYMINT_POLICY_PER_REQUEST_INPUT."""
        if self._rego is None:
            return NO_ATTRIBUTES
        if self.per_request_input or not (
            attributes.source_port
            or attributes.request_id
            or attributes.request_time_seconds
            or attributes.request_time_nanos
        ):
            return attributes
        return dataclasses.replace(
            attributes,
            source_port=0,
            request_id="",
            request_time_seconds=0,
            request_time_nanos=0,
        )

    def snapshot(self) -> PolicySnapshot:
        """The policies in force now; a request is decided entirely under one snapshot."""
        policy, policy_sha = _loaded(self._policy) if self._policy is not None else (None, None)
        rego, rego_sha = _loaded(self._rego) if self._rego is not None else (None, None)
        return PolicySnapshot(policy, rego, policy_digest(policy_sha, rego_sha))

    def poll(self) -> None:
        """Re-read the policy files if they changed on disk (a no-op for fixed policies)."""
        for source in (self._policy, self._rego):
            if isinstance(source, PolicyStore):
                source.poll()

    def evaluate(self, request: AuthzRequest, snapshot: PolicySnapshot | None = None) -> Decision:
        """Decide `request` under `snapshot`, by default the policies in force now."""
        return self.judge(request, snapshot).decision

    def judge(self, request: AuthzRequest, snapshot: PolicySnapshot | None = None) -> Verdict:
        """The decision and, when a Rego decision shapes Envoy's response, that response."""
        if snapshot is None:
            snapshot = self.snapshot()  # one snapshot per request, even across a reload
        policy, rego = snapshot.policy, snapshot.rego
        if policy is not None:
            decision = evaluate_policy(policy, request, self._limits)
            if rego is None or isinstance(decision, Denial):
                return Verdict(decision)
            answer = _ask(rego, request, decision, self._headers)
            if isinstance(answer, Denial):
                return Verdict(answer)
            return _verdict(narrow_grant(decision, answer, request), answer)
        assert rego is not None
        ttl = _requested_ttl(request, self._limits)
        if isinstance(ttl, Denial):  # refused before asking Rego anything
            return Verdict(ttl)
        answer = _ask(rego, request, None, self._headers)
        if isinstance(answer, Denial):
            return Verdict(answer)
        rule = f"rego:{rego.query}"
        return _verdict(grant_from_rego(answer, request, self._limits, rule=rule), answer)

    def audience_for(self, route: Route) -> str | None:
        """The audience this route stands for, if any (for keymint's own tokens): the JSON
        policy's, or with Rego alone the route's `context_extensions.audience`."""
        configured = route.context_extensions.get(CONTEXT_AUDIENCE) or None
        if self._policy is None:
            return configured
        policy = _current(self._policy)
        if policy is None:
            return None
        audience = route_audience(policy, route, configured)
        return None if isinstance(audience, Denial) else audience


def _current(source: T | PolicyStore[T] | None) -> T | None:
    return source.current if isinstance(source, PolicyStore) else source


def _loaded(source: T | PolicyStore[T]) -> tuple[T, str]:
    """The value in force and the SHA-256 of its file; a policy given as an object (tests) is
    named by its identity in this process."""
    if isinstance(source, PolicyStore):
        return source.loaded()
    return source, f"object:{id(source):x}"


def _verdict(decision: Decision, answer: RegoAnswer) -> Verdict:
    """Rego's response decorations stand only with the outcome they were written for."""
    stands = isinstance(decision, Grant) if answer.allow else _rego_denied(decision)
    return Verdict(decision, answer.response if stands else None)


def _rego_denied(decision: Decision) -> bool:
    return isinstance(decision, Denial) and decision.reason is DenyReason.REGO_DENIED


def _ask(
    rego: RegoPolicy, request: AuthzRequest, grant: Grant | None, headers: PolicyHeaders
) -> RegoAnswer | Denial:
    """Rego's answer; its failures as denials. Whatever the policy could read of a credential
    header never reaches a denial's detail, a log line or Envoy's access log (the metadata)."""
    rule = None if grant is None else grant.rule
    secrets = secrets_in(request.headers, headers.credentials & CREDENTIAL_HEADERS)
    try:
        answer = rego.decide(build_input(request, grant, headers=headers))
    except RegoUndefined as exc:
        return Denial(DenyReason.REGO_UNDEFINED, redact_text(str(exc), secrets), rule=rule)
    except (RegoEvaluationError, BodyError) as exc:
        detail = redact_text(str(exc), secrets)
        _log.warning("Rego policy failed, denying: %s", detail)
        return Denial(DenyReason.REGO_ERROR, detail, rule=rule)
    if not secrets:
        return answer
    response = answer.response
    if response is not None and response.dynamic_metadata is not None:
        metadata = redact(dict(response.dynamic_metadata), secrets)
        assert isinstance(metadata, dict)
        response = dataclasses.replace(response, dynamic_metadata=metadata)
    reason = None if answer.reason is None else redact_text(answer.reason, secrets)
    return dataclasses.replace(answer, reason=reason, response=response)


def evaluate_policy(policy: Policy, request: AuthzRequest, limits: Limits) -> Decision:
    matched = policy.bindings_for(request.identity)
    if not matched:
        detail = f"no binding matches {describe_identity(request.identity)}"
        return Denial(DenyReason.NO_MATCHING_BINDING, detail)
    ttl_requested = _requested_ttl(request, limits)
    if isinstance(ttl_requested, Denial):
        return ttl_requested
    audience = resolve_audience(policy, request)
    if isinstance(audience, Denial):
        return audience
    route = request.route
    on_route = [b for b in matched if b.routes is None or b.routes.allows_route(route)]
    if not on_route:
        detail = (
            f"{_names(matched)} match the caller but not {route.method} {route.host}{route.path}"
        )
        return Denial(DenyReason.ROUTE_NOT_ALLOWED, detail, rule=matched[0].rule)
    allowed = [b for b in on_route if b.routes is None or b.routes.allows_audience(audience)]
    if not allowed:
        detail = f"{_names(on_route)} match the caller but not audience {audience!r}"
        return Denial(DenyReason.AUDIENCE_NOT_ALLOWED, detail, rule=on_route[0].rule)
    requested = request.requested_scopes()
    denials: list[Denial] = []
    for binding in allowed:
        role = binding.role
        scopes = choose_scopes(role.scopes, requested, limits, granted_by=f"role {role.name!r}")
        if isinstance(scopes, Denial):
            denials.append(dataclasses.replace(scopes, rule=binding.rule))
            continue
        ttl = min(ttl_requested, role.max_ttl_seconds)
        return Grant(audience=audience, scopes=scopes, ttl_seconds=ttl, rule=binding.rule)
    return denials[0]


def resolve_audience(policy: Policy, request: AuthzRequest) -> str | Denial:
    """Explicit request, else the route's context_extensions (audience, then route key), else
    the policy's host/path-prefix map. The result must be declared in the policy."""
    audience = _requested_audience(request)
    if isinstance(audience, Denial):
        return audience
    return route_audience(policy, request.route, audience)


def route_audience(policy: Policy, route: Route, audience: str | None = None) -> str | Denial:
    """The audience a route stands for (or the one requested), declared in the policy."""
    if audience is None:
        route_key = route.context_extensions.get(CONTEXT_ROUTE_KEY)
        if route_key:
            audience = policy.audience_by_route_key.get(route_key)
            if audience is None:
                detail = f"route key {route_key!r} maps to no audience in the policy"
                return Denial(DenyReason.NO_AUDIENCE, detail)
        else:
            host, path = normalize_host(route.host), request_path(route.path)
            audience = next(
                (r.audience for r in policy.audience_routes if r.matches(host, path)), None
            )
            if audience is None:
                detail = f"no audience was requested and none is mapped for {host}{path}"
                return Denial(DenyReason.NO_AUDIENCE, detail)
    if audience not in policy.audiences:
        return Denial(DenyReason.UNKNOWN_AUDIENCE, f"audience {audience!r} is not in the policy")
    return audience


def _requested_audience(request: AuthzRequest) -> str | Denial | None:
    configured = request.route.context_extensions.get(CONTEXT_AUDIENCE) or None
    if request.audience and configured and request.audience != configured:
        detail = f"the route fixes audience {configured!r}; {request.audience!r} was requested"
        return Denial(DenyReason.AUDIENCE_NOT_ALLOWED, detail)
    return request.audience or configured


def choose_scopes(
    offered: frozenset[str], requested: tuple[str, ...], limits: Limits, *, granted_by: str
) -> tuple[str, ...] | Denial:
    """Requested scopes must all be allowed (outside ALLOWED_SCOPES or `offered`: refused);
    with none requested, `offered` is granted minus what ALLOWED_SCOPES excludes (dropped)."""
    if requested:
        capped = [s for s in requested if s not in limits.allowed_scopes]
        if capped:
            detail = f"outside ALLOWED_SCOPES: {' '.join(capped)}"
            return Denial(DenyReason.SCOPE_NOT_ALLOWED, detail)
        missing = [s for s in requested if s not in offered]
        if missing:
            detail = f"{granted_by} does not grant: {' '.join(missing)}"
            return Denial(DenyReason.SCOPE_NOT_ALLOWED, detail)
        return tuple(sorted(requested))
    granted = tuple(sorted(offered & limits.allowed_scopes))
    if not granted:
        detail = f"none of the scopes {granted_by} grants is in ALLOWED_SCOPES"
        return Denial(DenyReason.NO_SCOPES, detail)
    return granted


def narrow_grant(grant: Grant, answer: RegoAnswer, request: AuthzRequest) -> Decision:
    """Apply a Rego answer to the JSON policy's grant: it may only remove, never add."""
    if not answer.allow:
        reason = answer.reason or "the Rego policy does not allow this request"
        return Denial(DenyReason.REGO_DENIED, reason, rule=grant.rule)
    if answer.audience is not None and answer.audience != grant.audience:
        detail = f"Rego answered audience {answer.audience!r}; the policy grants {grant.audience!r}"
        return Denial(DenyReason.AUDIENCE_NOT_ALLOWED, detail, rule=grant.rule)
    scopes = grant.scopes
    if answer.scopes is not None:
        refused = [s for s in scopes if s not in answer.scopes]
        scopes = tuple(s for s in scopes if s in answer.scopes)
        if refused and request.requested_scopes():
            detail = f"the Rego policy does not allow: {' '.join(refused)}"
            return Denial(DenyReason.SCOPE_NOT_ALLOWED, detail, rule=grant.rule)
        if not scopes:
            detail = "the Rego policy allows none of the granted scopes"
            return Denial(DenyReason.NO_SCOPES, detail, rule=grant.rule)
    ttl = grant.ttl_seconds
    if answer.ttl_seconds is not None:
        ttl = min(ttl, answer.ttl_seconds)
    return Grant(audience=grant.audience, scopes=scopes, ttl_seconds=ttl, rule=f"{grant.rule}+rego")


def grant_from_rego(
    answer: RegoAnswer, request: AuthzRequest, limits: Limits, *, rule: str
) -> Decision:
    """A grant from a Rego policy used without a JSON policy: what it names, or when it names
    no scopes, what the route's `context_extensions` name (an explicit request can only pick
    among those)."""
    if not answer.allow:
        reason = answer.reason or "the Rego policy does not allow this request"
        return Denial(DenyReason.REGO_DENIED, reason, rule=rule)
    requested = _requested_audience(request)
    if isinstance(requested, Denial):
        return requested
    if answer.audience and requested and answer.audience != requested:
        detail = f"Rego answered audience {answer.audience!r}; {requested!r} was requested"
        return Denial(DenyReason.AUDIENCE_NOT_ALLOWED, detail, rule=rule)
    offered, granted_by = answer.scopes, "the Rego policy"
    route_audience = request.route.context_extensions.get(CONTEXT_AUDIENCE) or None
    audience = answer.audience or (requested if offered is not None else route_audience)
    if not audience:
        detail = (
            "neither the request nor Rego names an audience"
            if offered is not None
            else "the Rego policy names no audience, nor does the route's context_extensions"
        )
        return Denial(DenyReason.NO_AUDIENCE, detail, rule=rule)
    if offered is None:  # a yes or no: the route's operator-set scopes are the offer
        offered = frozenset(request.route.context_extensions.get(CONTEXT_SCOPES, "").split())
        granted_by = "the route's context_extensions"
        if not offered:
            detail = "the Rego policy names no `scopes`, nor does the route's context_extensions"
            return Denial(DenyReason.NO_SCOPES, detail, rule=rule)
    scopes = choose_scopes(offered, request.requested_scopes(), limits, granted_by=granted_by)
    if isinstance(scopes, Denial):
        return dataclasses.replace(scopes, rule=rule)
    ttl = _requested_ttl(request, limits)
    if isinstance(ttl, Denial):
        return ttl
    ceiling = answer.ttl_seconds or limits.default_ttl_seconds
    return Grant(audience=audience, scopes=scopes, ttl_seconds=min(ttl, ceiling), rule=rule)


def _requested_ttl(request: AuthzRequest, limits: Limits) -> int | Denial:
    """The TTL asked for, or the default; the caller clamps it to the role's maximum."""
    if request.ttl_seconds is None:
        return limits.default_ttl_seconds
    if request.ttl_seconds <= 0:
        return Denial(
            DenyReason.INVALID_TTL, f"requested TTL {request.ttl_seconds} is not positive"
        )
    return request.ttl_seconds


def describe_identity(identity: Identity) -> str:
    if identity.spiffe_id is not None:
        return f"{identity.kind.value} {identity.spiffe_id}"
    claims = identity.claims
    ids = ", ".join(
        f"{k}={claims[k]}" for k in ("repository_id", "repository_owner_id") if k in claims
    )
    return f"{identity.kind.value} {identity.subject} from {identity.issuer}" + (
        f" ({ids})" if ids else ""
    )


def _names(bindings: Sequence[Binding]) -> str:
    names = [b.name for b in bindings]
    return f"binding {names[0]!r}" if len(names) == 1 else f"bindings {names!r}"
