"""Optional Rego policies through regopy (rego-cpp), fed the input document OPA-Envoy builds.

The input carries what `opa-envoy-plugin` gives a policy (`attributes.request.http`,
`attributes.source.principal`, `attributes.context_extensions`, `parsed_path`, `parsed_query`),
so existing OPA-Envoy policies carry over, plus `identity` (the verified caller), `requested`
(audience, scopes, TTL asked for) and `grant` (what the JSON policy would grant, or null).
Credentials (headers, token query parameters) never enter it, nor do the per-request headers
`PolicyHeaders` ignores (request ids, trace contexts), which the hot cache's key also leaves
out. The decision document (default `data.keymint.authz`) answers `allow` and optionally
`audience`, `scopes`, `ttl_seconds` and `reason`; how that combines with the JSON policy is
decided in `extauthz.policy.engine`.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from extauthz.errors import ExtAuthzError
from extauthz.model import Grant, Identity, IdentityKind
from extauthz.policy.model import AuthzRequest, PolicyError

DEFAULT_QUERY = "data.keymint.authz"
# Removed before a policy sees the request: a policy, its prints and its decision logs must
# never hold a caller's credential.
CREDENTIAL_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "x-forwarded-client-cert", "cookie"}
)
# Headers that identify one request rather than say anything about it: Envoy's request id and
# timeout hints, and the trace contexts of W3C, B3 (Zipkin), Jaeger, OpenTracing, Datadog, AWS,
# Google Cloud, Sentry and gRPC. Each request carries new values, so a hot-cache key holding
# them would never hit; they are left out of the key AND out of the Rego input, so a policy can
# never read what the cache ignores. A trailing `*` is a prefix. KEYMINT_POLICY_IGNORED_HEADERS
# replaces this list.
DEFAULT_IGNORED_HEADERS = (
    "x-request-id",
    "x-client-trace-id",
    "x-envoy-expected-rq-timeout-ms",
    "x-envoy-attempt-count",
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-*",
    "uber-trace-id",
    "x-ot-span-context",
    "x-datadog-*",
    "x-amzn-trace-id",
    "x-cloud-trace-context",
    "sentry-trace",
    "grpc-trace-bin",
)
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")  # RFC 9110 token, lower case
# RFC 6750 allows a bearer token in the query; RFC 8693 names its tokens these ways.
CREDENTIAL_QUERY_PARAMETERS = frozenset(
    {"access_token", "id_token", "subject_token", "actor_token", "token"}
)
_QUERY = re.compile(r"data(\.[A-Za-z_][A-Za-z0-9_]*)+")
_ERROR = re.compile(r"\(error \d+:[^|]*\|(?P<offset>\d+)\|\d+\s*\(errormsg (?P<size>\d+):")


class RegoEvaluationError(ExtAuthzError):
    """A Rego policy failed to produce a decision: a policy or engine fault, never an allow."""


@dataclass(frozen=True, slots=True)
class PolicyHeaders:
    """The request headers a Rego policy reads: all but credentials and the ignored ones.

    One selection serves two readers, the Rego input and the hot cache's key, so whatever a
    policy can read is part of the key and a cached allow is never one a fresh evaluation of
    the same request would deny.
    """

    ignored: frozenset[str] = frozenset()
    ignored_prefixes: tuple[str, ...] = ()
    _dropped: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # One set lookup per header on the hot path: credentials and ignored names together.
        object.__setattr__(self, "_dropped", CREDENTIAL_HEADERS | self.ignored)

    @classmethod
    def ignoring(cls, names: Iterable[str]) -> PolicyHeaders:
        """From header names (case-insensitive; a trailing `*` makes a prefix); ValueError
        names the first entry that is not a header name."""
        exact: set[str] = set()
        prefixes: list[str] = []
        for entry in names:
            name = entry.strip().lower()
            stem = name[:-1] if name.endswith("*") else name
            if not stem or not _HEADER_NAME.fullmatch(stem) or "*" in stem:
                raise ValueError(f"{entry!r} is not a header name (or a prefix ending in *)")
            if name.endswith("*"):
                prefixes.append(stem)
            else:
                exact.add(name)
        return cls(frozenset(exact), tuple(sorted(prefixes)))

    @classmethod
    def default(cls) -> PolicyHeaders:
        return cls.ignoring(DEFAULT_IGNORED_HEADERS)

    def select(self, headers: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
        """The readable headers, lower-cased and sorted: a stable value for a cache key."""
        dropped, prefixes = self._dropped, self.ignored_prefixes
        selected = [
            (lowered, value)
            for lowered, value in ((name.lower(), value) for name, value in headers.items())
            if lowered not in dropped and not lowered.startswith(prefixes)
        ]
        selected.sort()
        return tuple(selected)


@dataclass(frozen=True, slots=True)
class RegoAnswer:
    allow: bool
    audience: str | None = None
    scopes: frozenset[str] | None = None
    ttl_seconds: int | None = None
    reason: str | None = None


def build_input(
    request: AuthzRequest, grant: Grant | None = None, *, headers: PolicyHeaders | None = None
) -> dict[str, object]:
    """The OPA-Envoy-shaped input document for one request, without credentials; its headers
    are `headers.select(request.headers)` (the default ignored list when not given)."""
    route = request.route
    url = urlsplit(route.path)
    query = parse_qsl(url.query, keep_blank_values=True)
    path = route.path
    if any(name in CREDENTIAL_QUERY_PARAMETERS for name, _ in query):
        query = [(name, value) for name, value in query if name not in CREDENTIAL_QUERY_PARAMETERS]
        path = url._replace(query=urlencode(query), fragment="").geturl()
    parsed_query: dict[str, list[str]] = {}
    for name, value in query:
        parsed_query.setdefault(name, []).append(value)
    readable = dict((headers or _DEFAULT_HEADERS).select(request.headers))
    context_extensions = dict(route.context_extensions)
    return {
        "attributes": {
            "source": {"principal": _principal(request.identity)},
            "request": {
                "http": {
                    "method": route.method,
                    "path": path,
                    "host": route.host,
                    "headers": readable,
                }
            },
            "context_extensions": context_extensions,
            # The spelling OPA-Envoy's protojson encoding produces, for policies written for it.
            "contextExtensions": context_extensions,
        },
        # As opa-envoy-plugin: decoded path without leading slashes, split on "/".
        "parsed_path": unquote(url.path).lstrip("/").split("/"),
        "parsed_query": parsed_query,
        "version": {"encoding": "protojson", "ext_authz": "v3"},
        "identity": {
            "kind": request.identity.kind.value,
            "subject": request.identity.subject,
            "issuer": request.identity.issuer,
            "spiffe_id": _spiffe_id(request.identity),
            "claims": dict(request.identity.claims),
        },
        "requested": {
            "audience": request.requested_audience(),
            "scopes": list(request.requested_scopes()),
            "ttl_seconds": request.ttl_seconds,
        },
        "grant": None
        if grant is None
        else {
            "audience": grant.audience,
            "scopes": list(grant.scopes),
            "ttl_seconds": grant.ttl_seconds,
            "rule": grant.rule,
        },
    }


_DEFAULT_HEADERS = PolicyHeaders.default()


def _spiffe_id(identity: Identity) -> str | None:
    return None if identity.spiffe_id is None else str(identity.spiffe_id)


def _principal(identity: Identity) -> str:
    """What Envoy puts in `source.principal`: the peer certificate's URI SAN, else its subject."""
    if identity.kind is IdentityKind.SPIFFE:
        return _spiffe_id(identity) or identity.subject
    if identity.kind is IdentityKind.X509:
        return identity.subject
    return ""


class RegoPolicy:
    """One compiled Rego module and its decision query; safe to share between threads."""

    def __init__(self, *, interpreter: Any, bundle: Any, query: str, source: str) -> None:
        self._interpreter = interpreter
        self._bundle = bundle
        self._lock = threading.Lock()  # one interpreter; ctypes calls drop the GIL
        self.query = query
        self.source = source

    @classmethod
    def compile(
        cls, text: str, source: str = "policy.rego", *, query: str = DEFAULT_QUERY
    ) -> RegoPolicy:
        """Compile a module and prove the query answers; raises PolicyError otherwise."""
        try:
            from regopy import Interpreter, LogLevel
        except ImportError:
            raise PolicyError("Rego needs regopy: install keymint[rego]", source=source) from None
        if not _QUERY.fullmatch(query):
            raise PolicyError(f"query {query!r} is not a data reference", source=source)
        builder = Interpreter()
        builder.log_level = LogLevel.NONE
        try:
            builder.add_module(source, text)
            bundle = builder.build(query)
        except Exception as exc:  # regopy raises RegoError and, on some faults, other types
            raise PolicyError(_describe_compile_error(str(exc), text), source=source) from None
        if not bundle.ok():
            raise PolicyError("the module does not compile", source=source)
        runner = Interpreter()
        runner.log_level = LogLevel.NONE
        policy = cls(interpreter=runner, bundle=bundle, query=query, source=source)
        try:
            policy.decide({})
        except RegoEvaluationError as exc:
            raise PolicyError(f"{query} on an empty input: {exc}", source=source) from None
        return policy

    @classmethod
    def load_file(cls, path: str | os.PathLike[str], *, query: str = DEFAULT_QUERY) -> RegoPolicy:
        source = os.fspath(path)
        try:
            with open(source, "rb") as handle:
                content = handle.read()
        except OSError as exc:
            raise PolicyError(f"cannot read policy: {exc.strerror}", source=source) from None
        return cls.loader(query)(content, source)

    @classmethod
    def loader(cls, query: str = DEFAULT_QUERY) -> Callable[[bytes, str], RegoPolicy]:
        """A `PolicyStore` loader for Rego files."""

        def load(content: bytes, source: str) -> RegoPolicy:
            try:
                text = content.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise PolicyError(f"not UTF-8 (byte {exc.start})", source=source) from None
            return cls.compile(text, source, query=query)

        return load

    def decide(self, document: Mapping[str, object]) -> RegoAnswer:
        # A JSON term, not regopy's `Input`: rego-cpp keeps strings in their escaped source
        # form, so only JSON-escaped input compares equal to policy literals such as "\"",
        # and non-ASCII must stay literal UTF-8 for the same reason.
        term = json.dumps(document, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        with self._lock:
            try:
                self._interpreter.set_input_term(term)
                output = self._interpreter.query_bundle(self._bundle)
                succeeded = bool(output.ok())
                results = [list(result.expressions) for result in output.results]
            except json.JSONDecodeError as exc:
                # regopy hands back rego-cpp's error node as if it were JSON (seen for calls
                # to unknown functions); its text is not reachable through the public API.
                detail = "rego-cpp returned an error instead of a value (an unknown function?)"
                raise RegoEvaluationError(f"{self.source}: {detail}") from exc
            except Exception as exc:  # a foreign library: any fault is a failed evaluation
                raise RegoEvaluationError(f"{self.source}: evaluation failed: {exc}") from exc
        if not succeeded:
            raise RegoEvaluationError(f"{self.source}: evaluation failed")
        if not results or not results[0]:
            raise RegoEvaluationError(f"{self.query} is undefined: is the package declared?")
        if len(results) != 1 or len(results[0]) != 1:
            raise RegoEvaluationError(f"{self.query} gave more than one value")
        return _answer(results[0][0])


def _answer(document: object) -> RegoAnswer:
    if not isinstance(document, dict):
        raise RegoEvaluationError("the decision must be an object with `allow`")
    allow = document.get("allow", False)
    audience = document.get("audience")
    scopes = document.get("scopes")
    ttl = document.get("ttl_seconds")
    reason = document.get("reason")
    if not isinstance(allow, bool):
        raise RegoEvaluationError("`allow` must be a boolean")
    if audience is not None and (not isinstance(audience, str) or not audience):
        raise RegoEvaluationError("`audience` must be a non-empty string")
    if isinstance(scopes, str):
        scopes = scopes.split()
    if scopes is not None and (
        not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes)
    ):
        raise RegoEvaluationError("`scopes` must be an array of strings")
    if ttl is not None and (not isinstance(ttl, int) or isinstance(ttl, bool) or ttl <= 0):
        raise RegoEvaluationError("`ttl_seconds` must be a positive integer")
    if reason is not None and not isinstance(reason, str):
        raise RegoEvaluationError("`reason` must be a string")
    return RegoAnswer(
        allow=allow,
        audience=audience,
        scopes=None if scopes is None else frozenset(scopes),
        ttl_seconds=ttl,
        reason=reason,
    )


def _describe_compile_error(raw: str, text: str) -> str:
    """rego-cpp reports `(error N:file|offset|length (errormsg N:message))`; show line:column."""
    found: list[tuple[int, str]] = []
    for match in _ERROR.finditer(raw):
        start = match.end()
        found.append((int(match["offset"]), raw[start : start + int(match["size"])]))
    if not found:
        return f"does not compile: {raw.strip()}"
    offset, message = found[0]  # rego-cpp lists the innermost position first
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    return f"line {line}, column {column}: {message}{more}"
