"""Parse, validate and compile a JSON policy into a `Policy`.

Everything is checked here, once: unknown keys (a typo must not silently widen or narrow a
policy), duplicate keys, types, references between sections, and every pattern is compiled.
Errors name the file, the JSON path (`bindings[2].match.claims.ref`) and what is wrong.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NoReturn
from urllib.parse import urlsplit

from extauthz.model import IdentityKind
from extauthz.policy.examples import parse_examples
from extauthz.policy.model import (
    SVID_KINDS,
    AudienceRoute,
    Binding,
    ClaimCondition,
    ClaimRule,
    GithubMatch,
    Match,
    Policy,
    PolicyError,
    Role,
    RouteConstraint,
    RuleKind,
    SpiffeMatch,
    SpiffePattern,
    TokenMatch,
    normalize_host,
)

POLICY_VERSION = 1
MAX_TTL_SECONDS = 86_400  # a longer "short-lived" token is more likely a unit mistake than intent
# Names are recycled after a rename or deletion; ids never are. A GitHub binding pins one of these.
GITHUB_ID_CLAIMS = ("repository_id", "repository_owner_id")
GITLAB_ID_CLAIMS = ("project_id", "namespace_id")
# Binding kinds for the token issuers other than GitHub, and the identities each one matches.
TOKEN_BINDING_KINDS = {
    "gitlab_ci": IdentityKind.GITLAB_CI,
    "kubernetes": IdentityKind.KUBERNETES,
    "oidc": IdentityKind.OIDC,
}
MATCH_KINDS = ("spiffe", "github_actions", *TOKEN_BINDING_KINDS)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
_SCOPE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")  # RFC 6749 scope-token
_AUDIENCE = re.compile(r"\S{1,2048}")
_HOST = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?|\[[0-9a-f:.]+\]")
_PATH_PREFIX = re.compile(r"/[^\s?#]*")
_METHOD = re.compile(r"[A-Z]+")
_CLAIM = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMERIC_ID = re.compile(r"[0-9]+")
_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]+")
_SPIFFE_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SVID = re.compile(r"x509|jwt")


def load_policy_file(path: str | os.PathLike[str]) -> Policy:
    source = os.fspath(path)
    try:
        with open(source, "rb") as handle:
            content = handle.read()
    except OSError as exc:
        raise PolicyError(f"cannot read policy: {exc.strerror}", source=source) from None
    return parse_policy(content, source)


def parse_policy(content: bytes | str, source: str = "<policy>") -> Policy:
    """Compile policy JSON; `source` names it in errors (the file path, for files)."""
    try:
        text = content.decode("utf-8") if isinstance(content, bytes) else content
        document = json.loads(text, object_pairs_hook=_JsonObject.from_pairs, parse_constant=_nan)
    except UnicodeDecodeError as exc:
        raise PolicyError(f"not UTF-8 (byte {exc.start})", source=source) from None
    except json.JSONDecodeError as exc:
        message = f"invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        raise PolicyError(message, source=source) from None
    except PolicyError as exc:
        raise exc.in_source(source) from None
    return compile_policy(document, source)


def compile_policy(document: object, source: str = "<policy>") -> Policy:
    """Compile an already-parsed JSON document; `source` names it in errors."""
    try:
        return _compile(document, source)
    except PolicyError as exc:
        raise exc.in_source(source) from None


def _compile(document: object, source: str) -> Policy:
    fields = _Node(document, "").fields(
        optional=("version", "description", "roles", "audiences", "bindings", "examples")
    )
    version = fields["version"].value if "version" in fields else POLICY_VERSION
    if type(version) is not int or version != POLICY_VERSION:
        fields["version"].fail(f"unsupported policy version; this gateway reads {POLICY_VERSION}")
    _description(fields)
    roles = _roles(fields.get("roles"))
    audiences, audience_routes, by_route_key = _audiences(fields.get("audiences"))
    bindings = _bindings(fields.get("bindings"), roles, audiences)
    parse_examples(document, source)  # checked here, run by `extauthz policy test`
    return Policy(
        source=source,
        roles=roles,
        bindings=bindings,
        audiences=audiences,
        audience_routes=audience_routes,
        audience_by_route_key=by_route_key,
    )


class _JsonObject(dict[str, object]):
    """A JSON object that remembers keys given twice (`json` alone keeps the last silently)."""

    duplicates: tuple[str, ...] = ()

    @classmethod
    def from_pairs(cls, pairs: list[tuple[str, object]]) -> _JsonObject:
        obj = cls()
        duplicates: list[str] = []
        for key, value in pairs:
            if key in obj:
                duplicates.append(key)
            obj[key] = value
        obj.duplicates = tuple(duplicates)
        return obj


def _nan(constant: str) -> NoReturn:
    raise PolicyError(f"{constant} is not a JSON number")


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if _IDENTIFIER.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key)}]"


def _kind(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    return "null" if value is None else names.get(type(value), "a number")


@dataclass(frozen=True, slots=True)
class _Node:
    """A JSON value and where it sits, so every check can say where it failed."""

    value: object
    path: str

    def fail(self, message: str) -> NoReturn:
        raise PolicyError(message, location=self.path or "(top level)")

    def _object(self) -> dict[str, object]:
        if not isinstance(self.value, dict):
            self.fail(f"expected an object, found {_kind(self.value)}")
        if isinstance(self.value, _JsonObject) and self.value.duplicates:
            _Node(None, _join(self.path, self.value.duplicates[0])).fail("key given twice")
        return self.value

    def fields(
        self, *, required: Iterable[str] = (), optional: Iterable[str] = ()
    ) -> dict[str, _Node]:
        obj = self._object()
        required = tuple(required)
        known = sorted({*required, *optional})
        for key in obj:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"expected {', '.join(known)}"
                _Node(None, _join(self.path, key)).fail(f"unknown key ({hint})")
        for key in required:
            if key not in obj:
                self.fail(f"missing required key {key!r}")
        return {key: _Node(value, _join(self.path, key)) for key, value in obj.items()}

    def entries(self) -> list[tuple[str, _Node]]:
        return [(key, _Node(value, _join(self.path, key))) for key, value in self._object().items()]

    def items(self) -> list[_Node]:
        if not isinstance(self.value, list):
            self.fail(f"expected an array, found {_kind(self.value)}")
        return [_Node(value, _join(self.path, i)) for i, value in enumerate(self.value)]

    def string(self, pattern: re.Pattern[str] | None = None, what: str = "") -> str:
        if not isinstance(self.value, str):
            self.fail(f"expected a string, found {_kind(self.value)}")
        if pattern is not None and not pattern.fullmatch(self.value):
            self.fail(f"{self.value!r} is not {what}")
        return self.value

    def integer(self, minimum: int, maximum: int) -> int:
        if not isinstance(self.value, int) or isinstance(self.value, bool):
            self.fail(f"expected an integer, found {_kind(self.value)}")
        if not minimum <= self.value <= maximum:
            self.fail(f"{self.value} is outside {minimum}..{maximum}")
        return self.value

    def strings(self, pattern: re.Pattern[str] | None = None, what: str = "") -> list[str]:
        """A non-empty array of distinct strings."""
        items = self.items()
        if not items:
            self.fail("expected a non-empty array")
        values: list[str] = []
        for item in items:
            value = item.string(pattern, what)
            if value in values:
                item.fail(f"{value!r} is listed twice")
            values.append(value)
        return values


def _description(fields: dict[str, _Node]) -> None:
    if "description" in fields:
        fields["description"].string()


def _roles(node: _Node | None) -> dict[str, Role]:
    roles: dict[str, Role] = {}
    for name, entry in node.entries() if node else ():
        if not _NAME.fullmatch(name):
            entry.fail("a role name is letters, digits and _ . : - (no '/')")
        fields = entry.fields(required=("scopes", "max_ttl_seconds"), optional=("description",))
        _description(fields)
        scopes = fields["scopes"].strings(_SCOPE, "a scope (printable ASCII, no spaces or quotes)")
        ttl = fields["max_ttl_seconds"].integer(1, MAX_TTL_SECONDS)
        roles[name] = Role(name=name, scopes=frozenset(scopes), max_ttl_seconds=ttl)
    return roles


def _host(node: _Node) -> str:
    host = normalize_host(node.string())
    if not _HOST.fullmatch(host) or host != node.string().lower():
        node.fail("expected a host name without port, scheme or wildcard")
    return host


def _audiences(
    node: _Node | None,
) -> tuple[frozenset[str], tuple[AudienceRoute, ...], dict[str, str]]:
    declared: set[str] = set()
    routes: dict[tuple[str | None, str], AudienceRoute] = {}
    by_route_key: dict[str, str] = {}
    for audience, entry in node.entries() if node else ():
        if not _AUDIENCE.fullmatch(audience):
            entry.fail("an audience is a non-empty string without whitespace")
        declared.add(audience)
        fields = entry.fields(optional=("hosts", "path_prefixes", "route_keys", "description"))
        _description(fields)
        hosts: list[str | None] = [None]
        if "hosts" in fields:
            hosts = [_host(item) for item in fields["hosts"].items()]
            fields["hosts"].strings()  # non-empty and distinct
        prefixes = ["/"]
        if "path_prefixes" in fields:
            prefixes = fields["path_prefixes"].strings(_PATH_PREFIX, "a path prefix ('/...')")
        if "hosts" in fields or "path_prefixes" in fields:
            for host in hosts:
                for prefix in prefixes:
                    taken = routes.get((host, prefix))
                    if taken is not None:
                        where = f"host {host or '(any)'} and path prefix {prefix}"
                        entry.fail(f"{where} already map to audience {taken.audience!r}")
                    routes[(host, prefix)] = AudienceRoute(audience, host, prefix)
        if "route_keys" in fields:
            for route_key in fields["route_keys"].strings(_NAME, "a route key"):
                if route_key in by_route_key:
                    known = by_route_key[route_key]
                    fields["route_keys"].fail(f"route key {route_key!r} already maps to {known!r}")
                by_route_key[route_key] = audience
    # A host-specific entry beats an any-host one; then the longest path prefix wins.
    ordered = sorted(routes.values(), key=lambda r: (r.host is None, -len(r.path_prefix)))
    return frozenset(declared), tuple(ordered), by_route_key


def _bindings(
    node: _Node | None, roles: dict[str, Role], audiences: frozenset[str]
) -> tuple[Binding, ...]:
    bindings: list[Binding] = []
    used: dict[str, int] = {}
    for index, entry in enumerate(node.items() if node else ()):
        fields = entry.fields(
            required=("name", "role", "match"), optional=("routes", "description")
        )
        _description(fields)
        name = fields["name"].string(_NAME, "a binding name (letters, digits, _ . : -)")
        if name in used:
            fields["name"].fail(f"binding name {name!r} is already used by bindings[{used[name]}]")
        used[name] = index
        role_name = fields["role"].string()
        role = roles.get(role_name)
        if role is None:
            close = difflib.get_close_matches(role_name, sorted(roles), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            fields["role"].fail(f"unknown role {role_name!r}{hint}")
        match = _match(fields["match"], name)
        routes = _routes(fields["routes"], audiences) if "routes" in fields else None
        bindings.append(Binding(index=index, name=name, role=role, match=match, routes=routes))
    return tuple(bindings)


def _match(node: _Node, binding: str) -> Match:
    kind = node._object().get("kind")
    if kind == "spiffe":
        fields = node.fields(required=("kind", "ids"), optional=("svids",))
        ids = fields["ids"]
        patterns = [_spiffe_pattern(item) for item in ids.items()]
        ids.strings()  # non-empty and distinct
        kinds = frozenset({IdentityKind.SPIFFE})
        if "svids" in fields:
            names = fields["svids"].strings(_SVID, "'x509' or 'jwt'")
            kinds = frozenset(SVID_KINDS[name] for name in names)
        return SpiffeMatch(tuple(patterns), kinds)
    if kind == "github_actions":
        fields = node.fields(required=("kind", "issuer", "claims"), optional=("present",))
        issuer = _issuer(fields["issuer"])
        conditions, pinned = _conditions(fields["claims"], binding, GITHUB_ID_CLAIMS)
        if not pinned:
            fields["claims"].fail(
                f"binding {binding!r} matches GitHub identities by name only: add repository_id "
                "or repository_owner_id (names can be re-registered after a rename or deletion; "
                "ids cannot)"
            )
        return GithubMatch(
            issuer=issuer,
            conditions=conditions,
            repository_ids=pinned.get("repository_id", frozenset()),
            repository_owner_ids=pinned.get("repository_owner_id", frozenset()),
            present=_present(fields.get("present")),
        )
    if isinstance(kind, str) and kind in TOKEN_BINDING_KINDS:
        return _token_match(node, binding, kind)
    expected = ", ".join(repr(k) for k in MATCH_KINDS)
    _Node(kind, _join(node.path, "kind")).fail(f"expected one of {expected}")


def _token_match(node: _Node, binding: str, kind: str) -> TokenMatch:
    """A GitLab CI, Kubernetes or generic OIDC binding: an issuer and its verified claims."""
    fields = node.fields(required=("kind", "issuer"), optional=("claims", "present"))
    issuer = _issuer(fields["issuer"])
    id_claims = GITLAB_ID_CLAIMS if kind == "gitlab_ci" else ()
    conditions: tuple[ClaimCondition, ...] = ()
    pinned: dict[str, frozenset[str]] = {}
    if "claims" in fields:
        conditions, pinned = _conditions(fields["claims"], binding, id_claims)
    present = _present(fields.get("present"))
    if kind == "gitlab_ci" and not pinned:
        node.fail(
            f"binding {binding!r} matches GitLab identities by name only: add project_id or "
            "namespace_id in claims (paths can be registered again after a rename or deletion; "
            "ids cannot)"
        )
    if not conditions and not present:
        node.fail(
            f"binding {binding!r} would match every identity of {issuer}: name the claims it "
            "requires (claims, present)"
        )
    return TokenMatch(TOKEN_BINDING_KINDS[kind], issuer, conditions, present)


def _issuer(node: _Node) -> str:
    issuer = node.string()
    if not (issuer.startswith("https://") or _is_loopback_http(issuer)):
        node.fail("an OIDC issuer is an https:// URL (http only on loopback)")
    return issuer


def _present(node: _Node | None) -> tuple[str, ...]:
    """`present`: claims that must be there, whatever their value."""
    if node is None:
        return ()
    return tuple(node.strings(_CLAIM, "a claim name"))


def _is_loopback_http(issuer: str) -> bool:
    """A local development or test issuer; the gateway fetches it only with http allowed."""
    host = urlsplit(issuer).hostname if issuer.startswith("http://") else None
    return host in ("127.0.0.1", "localhost", "::1")


def _spiffe_pattern(node: _Node) -> SpiffePattern:
    text = node.string()
    if not text.startswith("spiffe://"):
        node.fail("a SPIFFE ID pattern starts with 'spiffe://'")
    trust_domain, slash, path = text.removeprefix("spiffe://").partition("/")
    if not _TRUST_DOMAIN.fullmatch(trust_domain):
        node.fail(f"trust domain {trust_domain!r} must be exact: a-z 0-9 . - _, no wildcards")
    segments = path.split("/") if slash else []
    any_rest = bool(segments) and segments[-1] == "**"
    if any_rest:
        segments.pop()
    for segment in segments:
        if segment == "**":
            node.fail("'**' may only be the last segment")
        if segment != "*" and "*" in segment:
            node.fail(f"'*' must be a whole path segment, found {segment!r}")
        if segment != "*" and (segment in (".", "..") or not _SPIFFE_SEGMENT.fullmatch(segment)):
            node.fail(f"invalid SPIFFE ID path segment {segment!r}")
    return SpiffePattern(text, trust_domain, tuple(segments), any_rest)


def _conditions(
    node: _Node, binding: str, id_claims: tuple[str, ...]
) -> tuple[tuple[ClaimCondition, ...], dict[str, frozenset[str]]]:
    """A binding's `claims`, and the exact numeric ids it pins among `id_claims`."""
    conditions: list[ClaimCondition] = []
    pinned: dict[str, frozenset[str]] = {}
    for claim, value in node.entries():
        if not _CLAIM.fullmatch(claim):
            value.fail("expected a claim name")
        if claim in ("iss", "aud"):
            value.fail(f"'{claim}' is checked when the token is verified, not here")
        if claim == "email_verified":
            value.fail("match 'email': an identity carries it only when the IdP verified it")
        if not isinstance(value.value, str | list):
            value.fail("expected a string or an array of strings (any of them matches)")
        texts = [value.value] if isinstance(value.value, str) else value.strings()
        rules = tuple(_claim_rule(text, value, binding, claim) for text in texts)
        if claim in id_claims:
            exact_ids = all(
                r.kind is RuleKind.EXACT and _NUMERIC_ID.fullmatch(r.value) for r in rules
            )
            if not exact_ids:
                value.fail(f"{claim} must be exact numeric ids (as strings), never a pattern")
            pinned[claim] = frozenset(r.value for r in rules)
        conditions.append(ClaimCondition(claim, rules))
    return tuple(conditions), pinned


def glob_to_regex(glob: str) -> str:
    """`*` is any run of characters but `/`, `?` one character but `/`; the rest is literal."""
    return "".join("[^/]*" if ch == "*" else "[^/]" if ch == "?" else re.escape(ch) for ch in glob)


def _claim_rule(text: str, node: _Node, binding: str, claim: str) -> ClaimRule:
    kind, prefix, pattern = RuleKind.EXACT, "", text
    for candidate in (RuleKind.REGEX, RuleKind.GLOB, RuleKind.EXACT):
        if text.startswith(f"{candidate.value}:"):
            kind, prefix = candidate, f"{candidate.value}:"
            pattern = text.removeprefix(prefix)
            break
    if kind is RuleKind.EXACT:
        return ClaimRule(kind, text, pattern)
    where = f"binding {binding!r} claim {claim!r}"
    if not pattern:
        node.fail(f"{where}: empty {kind.value} pattern")
    source = glob_to_regex(pattern) if kind is RuleKind.GLOB else pattern
    try:
        compiled = re.compile(source)
    except re.error as exc:
        node.fail(f"{where}: invalid regex {pattern!r}: {exc}")
    return ClaimRule(kind, text, pattern, compiled)


def _routes(node: _Node, audiences: frozenset[str]) -> RouteConstraint:
    fields = node.fields(optional=("audiences", "hosts", "path_prefixes", "methods"))
    if not fields:
        node.fail("an empty `routes` restricts nothing: remove it or list what it allows")
    allowed_audiences = None
    if "audiences" in fields:
        allowed_audiences = frozenset(fields["audiences"].strings())
        for item in fields["audiences"].items():
            if item.value not in audiences:
                item.fail(f"audience {item.value!r} is not declared in `audiences`")
    hosts = None
    if "hosts" in fields:
        fields["hosts"].strings()
        hosts = frozenset(_host(item) for item in fields["hosts"].items())
    prefixes = None
    if "path_prefixes" in fields:
        prefixes = tuple(fields["path_prefixes"].strings(_PATH_PREFIX, "a path prefix ('/...')"))
    methods = None
    if "methods" in fields:
        methods = frozenset(fields["methods"].strings(_METHOD, "an upper-case HTTP method"))
    return RouteConstraint(
        audiences=allowed_audiences, hosts=hosts, path_prefixes=prefixes, methods=methods
    )
