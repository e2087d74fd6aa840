"""Compiled policy: frozen objects the loader builds once and the engine only reads.

Every pattern here is already compiled (globs and regexes to `re.Pattern`, SPIFFE patterns to
segment tuples) and the bindings are indexed by what an identity carries, so evaluating a request
parses nothing and compiles nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import TypeVar

from extauthz.errors import ExtAuthzError
from extauthz.model import Grant, Identity, IdentityKind, Route, SpiffeId
from extauthz.policy.attributes import NO_ATTRIBUTES, RequestAttributes

# Envoy per-route `context_extensions` keys the policy understands.
CONTEXT_AUDIENCE = "audience"
CONTEXT_SCOPES = "scopes"
CONTEXT_ROUTE_KEY = "route"


class PolicyError(ExtAuthzError):
    """A policy that cannot be loaded: names the file, the JSON path and what is wrong."""

    def __init__(self, message: str, *, source: str | None = None, location: str = "") -> None:
        self.message = message
        self.source = source
        self.location = location
        super().__init__(": ".join(part for part in (source, location, message) if part))

    def in_source(self, source: str) -> PolicyError:
        return PolicyError(self.message, source=source, location=self.location)


class DenyReason(StrEnum):
    NO_MATCHING_BINDING = "no_matching_binding"
    NO_AUDIENCE = "no_audience"
    UNKNOWN_AUDIENCE = "unknown_audience"
    ROUTE_NOT_ALLOWED = "route_not_allowed"
    AUDIENCE_NOT_ALLOWED = "audience_not_allowed"
    SCOPE_NOT_ALLOWED = "scope_not_allowed"
    NO_SCOPES = "no_scopes"
    INVALID_TTL = "invalid_ttl"
    REGO_DENIED = "rego_denied"
    REGO_ERROR = "rego_error"
    REGO_UNDEFINED = "rego_undefined"  # the decision has no value for this input


@dataclass(frozen=True, slots=True)
class Denial:
    """A policy decision against the request: data for a 403 and the audit log, not an error."""

    reason: DenyReason
    detail: str
    rule: str | None = None  # the binding that came closest, when there is one


Decision = Grant | Denial


@dataclass(frozen=True, slots=True)
class Limits:
    """Gateway-wide configuration every grant is capped by (`ALLOWED_SCOPES`, the default TTL)."""

    allowed_scopes: frozenset[str]
    default_ttl_seconds: int = 900

    def __post_init__(self) -> None:
        if self.default_ttl_seconds <= 0:
            raise ValueError("default_ttl_seconds must be positive")


@dataclass(frozen=True, slots=True)
class AuthzRequest:
    """What is asked: who, on which route, for which audience, scopes and lifetime.

    `audience`, `scopes` and `ttl_seconds` are explicit requests (e.g. the `/token` parameters);
    when absent the route's `context_extensions` and then the policy supply them. `headers` and
    `attributes` are only shown to a Rego policy: the headers it may read (no credentials unless
    the operator lets it), and what else Envoy said about the request.
    """

    identity: Identity
    route: Route
    audience: str | None = None
    scopes: tuple[str, ...] = ()
    ttl_seconds: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    attributes: RequestAttributes = NO_ATTRIBUTES

    def requested_audience(self) -> str | None:
        return self.audience or self.route.context_extensions.get(CONTEXT_AUDIENCE) or None

    def requested_scopes(self) -> tuple[str, ...]:
        scopes = self.scopes or tuple(self.route.context_extensions.get(CONTEXT_SCOPES, "").split())
        return tuple(dict.fromkeys(scopes))  # de-duplicated, order kept


@dataclass(frozen=True, slots=True)
class Role:
    name: str
    scopes: frozenset[str]
    max_ttl_seconds: int


@dataclass(frozen=True, slots=True)
class SpiffePattern:
    """`spiffe://td/a/*/c` (`*` is exactly one segment) or `spiffe://td/a/**` (one or more)."""

    text: str
    trust_domain: str
    segments: tuple[str, ...]  # literal segments, or "*"
    any_rest: bool

    @property
    def is_exact(self) -> bool:
        return not self.any_rest and "*" not in self.segments

    @property
    def literal_prefix(self) -> tuple[str, ...]:
        """The segments before the first `*`: every ID it matches starts with them."""
        if "*" in self.segments:
            return self.segments[: self.segments.index("*")]
        return self.segments

    def matches(self, spiffe_id: SpiffeId) -> bool:
        if spiffe_id.trust_domain != self.trust_domain:
            return False
        parts = spiffe_path_segments(spiffe_id.path)
        if parts is None:
            return False
        wanted = len(self.segments)
        if self.any_rest:
            if len(parts) <= wanted:
                return False
        elif len(parts) != wanted:
            return False
        return all(seg in ("*", part) for seg, part in zip(self.segments, parts, strict=False))


def wildcard_key(trust_domain: str, segments: tuple[str, ...]) -> str:
    """`td/a/b`: a segment never holds `/`, so the key names one prefix."""
    return "/".join((trust_domain, *segments))


def spiffe_path_segments(path: str) -> tuple[str, ...] | None:
    """The segments of a SPIFFE ID path, or None for a path no valid SPIFFE ID has."""
    if not path:
        return ()
    parts = tuple(path.split("/")[1:])
    if not path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        return None
    return parts


class RuleKind(StrEnum):
    EXACT = "exact"
    GLOB = "glob"
    REGEX = "regex"


@dataclass(frozen=True, slots=True)
class ClaimRule:
    kind: RuleKind
    text: str  # as written in the policy, for messages
    value: str  # the exact value, or the pattern source
    pattern: re.Pattern[str] | None = None  # compiled glob or regex; None for exact

    def matches(self, value: str) -> bool:
        if self.pattern is None:
            return value == self.value
        return self.pattern.fullmatch(value) is not None


_NO_LISTS: Mapping[str, tuple[str, ...]] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ClaimCondition:
    """One claim and its alternatives: the claim must be present and match any of the rules.
    A list claim (`groups`) matches when any one of its elements does."""

    claim: str
    rules: tuple[ClaimRule, ...]

    def matches(
        self, claims: Mapping[str, str], lists: Mapping[str, tuple[str, ...]] = _NO_LISTS
    ) -> bool:
        value = claims.get(self.claim)
        if isinstance(value, str):
            return any(rule.matches(value) for rule in self.rules)
        values = lists.get(self.claim, ())
        return any(rule.matches(item) for item in values for rule in self.rules)


def claims_present(identity: Identity, names: tuple[str, ...]) -> bool:
    """Every named claim is there: a non-empty string, or a list with an element."""
    return all(identity.claims.get(name) or identity.claim_lists.get(name) for name in names)


# The SVID forms a `spiffe` binding accepts: X.509-SVIDs unless the binding names JWT-SVIDs.
SVID_KINDS = {"x509": IdentityKind.SPIFFE, "jwt": IdentityKind.SPIFFE_JWT}


@dataclass(frozen=True, slots=True)
class SpiffeMatch:
    patterns: tuple[SpiffePattern, ...]
    kinds: frozenset[IdentityKind] = frozenset({IdentityKind.SPIFFE})

    def matches(self, identity: Identity) -> bool:
        spiffe_id = identity.spiffe_id
        return (
            identity.kind in self.kinds
            and spiffe_id is not None
            and any(p.matches(spiffe_id) for p in self.patterns)
        )


@dataclass(frozen=True, slots=True)
class GithubMatch:
    issuer: str
    conditions: tuple[ClaimCondition, ...]
    repository_ids: frozenset[str]  # empty when the binding pins the owner instead
    repository_owner_ids: frozenset[str]
    present: tuple[str, ...] = ()

    def matches(self, identity: Identity) -> bool:
        return (
            identity.kind is IdentityKind.GITHUB_ACTIONS
            and identity.issuer == self.issuer
            and all(c.matches(identity.claims) for c in self.conditions)
            and claims_present(identity, self.present)
        )


@dataclass(frozen=True, slots=True)
class TokenMatch:
    """A GitLab CI, Kubernetes or other OIDC identity of one issuer, by its verified claims."""

    kind: IdentityKind
    issuer: str
    conditions: tuple[ClaimCondition, ...]
    present: tuple[str, ...] = ()

    @property
    def index_key(self) -> str:
        return token_index_key(self.kind, self.issuer)

    def matches(self, identity: Identity) -> bool:
        return (
            identity.kind is self.kind
            and identity.issuer == self.issuer
            and all(c.matches(identity.claims, identity.claim_lists) for c in self.conditions)
            and claims_present(identity, self.present)
        )


def token_index_key(kind: IdentityKind, issuer: str) -> str:
    return f"{kind.value} {issuer}"


Match = SpiffeMatch | GithubMatch | TokenMatch


def normalize_host(host: str) -> str:
    """Lower-case, without port or trailing dot: `:authority` may carry either."""
    host = host.strip().lower()
    if host.startswith("["):
        host = host[: host.find("]") + 1]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def request_path(path: str) -> str:
    return path.split("?", 1)[0].split("#", 1)[0]


def path_has_prefix(path: str, prefix: str) -> bool:
    """Prefix match on segment boundaries: `/api` covers `/api` and `/api/x`, never `/apix`."""
    if prefix.endswith("/"):
        return path.startswith(prefix)
    return path == prefix or path.startswith(prefix + "/")


@dataclass(frozen=True, slots=True)
class RouteConstraint:
    """A binding's `routes`: each given list must contain the request's value."""

    audiences: frozenset[str] | None = None
    hosts: frozenset[str] | None = None
    path_prefixes: tuple[str, ...] | None = None
    methods: frozenset[str] | None = None

    def allows_route(self, route: Route) -> bool:
        if self.hosts is not None and normalize_host(route.host) not in self.hosts:
            return False
        if self.methods is not None and route.method.upper() not in self.methods:
            return False
        path = request_path(route.path)
        return self.path_prefixes is None or any(
            path_has_prefix(path, p) for p in self.path_prefixes
        )

    def allows_audience(self, audience: str) -> bool:
        return self.audiences is None or audience in self.audiences


@dataclass(frozen=True, slots=True)
class Binding:
    index: int  # position in the file: earlier bindings are tried first
    name: str
    role: Role
    match: Match
    routes: RouteConstraint | None = None

    @property
    def rule(self) -> str:
        return f"{self.name}/{self.role.name}"


@dataclass(frozen=True, slots=True)
class AudienceRoute:
    """Where an audience is served: the most specific entry matching host and path wins."""

    audience: str
    host: str | None  # None: any host
    path_prefix: str

    def matches(self, host: str, path: str) -> bool:
        return (self.host is None or self.host == host) and path_has_prefix(path, self.path_prefix)


_V = TypeVar("_V")


def _read_only(mapping: Mapping[str, _V]) -> Mapping[str, _V]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True, slots=True)
class Policy:
    """A compiled JSON policy, built by `extauthz.policy.loader`; it indexes its own bindings."""

    source: str
    roles: Mapping[str, Role]
    bindings: tuple[Binding, ...]
    audiences: frozenset[str]
    audience_routes: tuple[AudienceRoute, ...]  # most specific first
    audience_by_route_key: Mapping[str, str]
    # Binding positions by what an identity carries, so a request looks up its candidates.
    spiffe_exact: Mapping[str, tuple[int, ...]] = field(init=False)
    # by trust domain and the literal segments before the pattern's first wildcard
    # (`wildcard_key`): a request looks up one key per prefix of its own path, not every pattern
    spiffe_wildcard: Mapping[str, tuple[int, ...]] = field(init=False)
    github_by_repository_id: Mapping[str, tuple[int, ...]] = field(init=False)
    github_by_owner_id: Mapping[str, tuple[int, ...]] = field(init=False)
    tokens_by_issuer: Mapping[str, tuple[int, ...]] = field(init=False)  # token_index_key

    def __post_init__(self) -> None:
        indexes: dict[str, dict[str, list[int]]] = {
            "spiffe_exact": {},
            "spiffe_wildcard": {},
            "github_by_repository_id": {},
            "github_by_owner_id": {},
            "tokens_by_issuer": {},
        }
        for binding in self.bindings:
            for index_name, key in _index_keys(binding.match):
                indexes[index_name].setdefault(key, []).append(binding.index)
        for index_name, index in indexes.items():
            positions = {key: tuple(dict.fromkeys(found)) for key, found in index.items()}
            object.__setattr__(self, index_name, _read_only(positions))
        object.__setattr__(self, "roles", _read_only(self.roles))
        object.__setattr__(self, "audience_by_route_key", _read_only(self.audience_by_route_key))

    def bindings_for(self, identity: Identity) -> tuple[Binding, ...]:
        """The bindings whose identity match passes, in file order."""
        positions: set[int] = set()
        spiffe_kinds = (IdentityKind.SPIFFE, IdentityKind.SPIFFE_JWT)
        if identity.kind in spiffe_kinds and identity.spiffe_id is not None:
            positions.update(self.spiffe_exact.get(str(identity.spiffe_id), ()))
            wildcard = self.spiffe_wildcard
            if wildcard:
                trust_domain = identity.spiffe_id.trust_domain
                parts = spiffe_path_segments(identity.spiffe_id.path) or ()
                for length in range(len(parts) + 1):
                    positions.update(wildcard.get(wildcard_key(trust_domain, parts[:length]), ()))
        elif identity.kind is IdentityKind.GITHUB_ACTIONS:
            positions.update(
                self.github_by_repository_id.get(identity.claims.get("repository_id", ""), ())
            )
            positions.update(
                self.github_by_owner_id.get(identity.claims.get("repository_owner_id", ""), ())
            )
        else:
            key = token_index_key(identity.kind, identity.issuer)
            positions.update(self.tokens_by_issuer.get(key, ()))
        candidates = (self.bindings[i] for i in sorted(positions))
        return tuple(b for b in candidates if b.match.matches(identity))


def _index_keys(match: Match) -> list[tuple[str, str]]:
    if isinstance(match, TokenMatch):
        return [("tokens_by_issuer", match.index_key)]
    if isinstance(match, SpiffeMatch):
        return [
            ("spiffe_exact", p.text)
            if p.is_exact
            else ("spiffe_wildcard", wildcard_key(p.trust_domain, p.literal_prefix))
            for p in match.patterns
        ]
    # The most specific pin is enough to find a binding; its full match re-checks the rest.
    if match.repository_ids:
        return [("github_by_repository_id", key) for key in match.repository_ids]
    return [("github_by_owner_id", key) for key in match.repository_owner_ids]
