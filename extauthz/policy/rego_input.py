"""The input document a Rego policy reads: the one opa-envoy-plugin (1.x) builds, and keymint's.

From Envoy's CheckRequest, as opa-envoy-plugin gives it (protobuf JSON names):
`attributes.source` and `attributes.destination` (`address.socketAddress.{address,portValue}`,
`principal`), `attributes.request.http` (`id`, `method`, `path`, `host`, `scheme`, `protocol`,
`headers`, `size`, `body`, `rawBody`), `attributes.request.time`, `attributes.contextExtensions`
(also as `context_extensions`), `attributes.tlsSession.sni`; then `parsed_path`, `parsed_query`,
`parsed_body` (JSON and form bodies), `truncated_body`, `source_principal` and `version`. keymint
adds `identity` (the verified caller), `requested` (audience, scopes, TTL asked for) and `grant`
(what the JSON policy grants, or null).

What differs, and why: `source.principal` is the verified caller's (from a trusted proxy, the
client it forwards, never the proxy), and `source.certificate` is absent (`identity` has what it
proves). Credentials are stripped unless the operator lets a policy read a credential header
(KEYMINT_POLICY_CREDENTIAL_HEADERS); token query parameters always are. Headers that identify one
request (request ids, trace contexts) are absent, and so are the source port, `http.id` and
`request.time` unless KEYMINT_POLICY_PER_REQUEST_INPUT is set: whatever a policy can read is in
the hot cache's key, and a per-request value there is a cache that never hits.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from extauthz.model import Grant, Identity, IdentityKind
from extauthz.policy.attributes import RequestAttributes
from extauthz.policy.model import AuthzRequest

# Headers that carry a caller's credential. A policy, its decision and the logs never hold them,
# except those the operator names in KEYMINT_POLICY_CREDENTIAL_HEADERS (a policy that checks a
# basic-auth password or decodes a bearer token needs to read it).
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
# RFC 6750 allows a bearer token in the query; RFC 8693 names its tokens these ways.
CREDENTIAL_QUERY_PARAMETERS = frozenset(
    {"access_token", "id_token", "subject_token", "actor_token", "token"}
)
VERSION = {"encoding": "protojson", "ext_authz": "v3"}
PARTIAL_BODY_HEADER = "x-envoy-auth-partial-body"  # Envoy's mark of a truncated body
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")  # RFC 9110 token, lower case


class BodyError(ValueError):
    """A body its content type says is JSON (or a form) that does not parse as one."""


@dataclass(frozen=True, slots=True)
class PolicyHeaders:
    """The request headers a Rego policy reads: all but credentials and the ignored ones.

    One selection serves three readers, the Rego input, the hot cache's key and the evidence the
    signers decide on, so whatever a policy can read is part of the key and a cached allow is
    never one a fresh evaluation of the same request would deny. `credentials` are the credential
    headers the operator lets a policy read.
    """

    ignored: frozenset[str] = frozenset()
    ignored_prefixes: tuple[str, ...] = ()
    credentials: frozenset[str] = frozenset()
    _dropped: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        unknown = self.credentials - CREDENTIAL_HEADERS
        if unknown:
            raise ValueError(
                f"{', '.join(sorted(unknown))}: not a credential header (those are "
                f"{', '.join(sorted(CREDENTIAL_HEADERS))}); other headers are readable already"
            )
        # One set lookup per header on the hot path: credentials and ignored names together.
        dropped = (CREDENTIAL_HEADERS - self.credentials) | self.ignored
        object.__setattr__(self, "_dropped", dropped)

    @classmethod
    def ignoring(cls, names: Iterable[str], credentials: Iterable[str] = ()) -> PolicyHeaders:
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
        readable = frozenset(name.strip().lower() for name in credentials)
        return cls(frozenset(exact), tuple(sorted(prefixes)), readable)

    @classmethod
    def default(cls, credentials: Iterable[str] = ()) -> PolicyHeaders:
        return cls.ignoring(DEFAULT_IGNORED_HEADERS, credentials)

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


_DEFAULT_HEADERS = PolicyHeaders.default()


def build_input(
    request: AuthzRequest, grant: Grant | None = None, *, headers: PolicyHeaders | None = None
) -> dict[str, object]:
    """The input document for one request; its headers are `headers.select(request.headers)`
    (the default selection when not given). BodyError if a JSON or form body does not parse."""
    route, attributes = request.route, request.attributes
    path, query = _without_credentials(route.path)
    parsed_query: dict[str, list[str]] = {}
    for name, value in query:
        parsed_query.setdefault(name, []).append(value)
    readable = dict((headers or _DEFAULT_HEADERS).select(request.headers))
    if ":path" in readable:  # Envoy's pseudo-header repeats the path, query and all
        readable[":path"] = path
    context_extensions = dict(route.context_extensions)
    principal = _principal(request.identity)
    http: dict[str, object] = {
        "method": route.method,
        "path": path,
        "host": route.host,
        "headers": readable,
    }
    _put(http, "id", attributes.request_id)
    _put(http, "scheme", attributes.scheme)
    _put(http, "protocol", attributes.protocol)
    _put(http, "size", attributes.size)
    _put(http, "body", attributes.body)
    _put(http, "rawBody", base64.b64encode(attributes.raw_body).decode())
    http_request: dict[str, object] = {"http": http}
    _put(http_request, "time", attributes.request_time())
    document_attributes: dict[str, object] = {
        "source": _peer(attributes.source_address, attributes.source_port, principal),
        "destination": _peer(
            attributes.destination_address,
            attributes.destination_port,
            attributes.destination_principal,
        ),
        "request": http_request,
        "context_extensions": context_extensions,
        # The spelling of opa-envoy-plugin's protobuf JSON, for policies written for it.
        "contextExtensions": context_extensions,
    }
    if attributes.sni:
        document_attributes["tlsSession"] = {"sni": attributes.sni}
    parsed_body, truncated = parse_body(readable, attributes)
    document: dict[str, object] = {
        "attributes": document_attributes,
        # As opa-envoy-plugin: decoded path without leading slashes, split on "/".
        "parsed_path": unquote(urlsplit(path).path).lstrip("/").split("/"),
        "parsed_query": parsed_query,
        "parsed_body": parsed_body,
        "truncated_body": truncated,
        "version": dict(VERSION),
        "identity": {
            "kind": request.identity.kind.value,
            "subject": request.identity.subject,
            "issuer": request.identity.issuer,
            "spiffe_id": _spiffe_id(request.identity),
            # List claims (an IdP's `groups`) as lists, beside the string claims.
            "claims": {
                **request.identity.claims,
                **{name: list(values) for name, values in request.identity.claim_lists.items()},
            },
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
    if principal:
        document["source_principal"] = principal
    return document


def parse_body(
    headers: Mapping[str, str], attributes: RequestAttributes
) -> tuple[object | None, bool]:
    """`parsed_body` and `truncated_body` as opa-envoy-plugin computes them: JSON and
    URL-encoded form bodies by their content type (from `body`, else `rawBody`); None and
    False for anything else; None and True when Envoy sent a part of the body."""
    if headers.get(PARTIAL_BODY_HEADER) == "true":
        return None, True
    content_type = headers.get("content-type", "")
    json_body = "application/json" in content_type
    if not (json_body or "application/x-www-form-urlencoded" in content_type):
        return None, False
    payload = attributes.body.encode() or attributes.raw_body
    if not payload:
        return None, False
    length = headers.get("content-length")
    if length is not None:
        try:
            declared = int(length)
        except ValueError:
            raise BodyError(f"content-length {length!r} is not a number") from None
        if declared != -1 and declared > len(payload):
            return None, True
    try:
        text = payload.decode()
    except UnicodeDecodeError:
        raise BodyError("the body is not UTF-8") from None
    if json_body:
        try:
            return json.loads(text, parse_constant=_no_constant), False
        except (json.JSONDecodeError, RecursionError) as exc:
            raise BodyError(f"the body is not JSON ({exc})") from None
    form: dict[str, list[str]] = {}
    for name, value in parse_qsl(text, keep_blank_values=True):
        form.setdefault(name, []).append(value)
    return form, False


def _no_constant(name: str) -> object:
    raise json.JSONDecodeError(f"{name} is not JSON", name, 0)


def _without_credentials(raw_path: str) -> tuple[str, list[tuple[str, str]]]:
    """The path and its query, without the query parameters that carry tokens."""
    url = urlsplit(raw_path)
    query = parse_qsl(url.query, keep_blank_values=True)
    if not any(name in CREDENTIAL_QUERY_PARAMETERS for name, _ in query):
        return raw_path, query
    query = [(name, value) for name, value in query if name not in CREDENTIAL_QUERY_PARAMETERS]
    return url._replace(query=urlencode(query), fragment="").geturl(), query


def _peer(address: str, port: int, principal: str) -> dict[str, object]:
    peer: dict[str, object] = {"principal": principal}
    if address:
        socket: dict[str, object] = {"address": address}
        _put(socket, "portValue", port)
        peer["address"] = {"socketAddress": socket}
    return peer


def _put(target: dict[str, object], name: str, value: object) -> None:
    """Like protobuf JSON: a field at its zero value is left out."""
    if value:
        target[name] = value


def _spiffe_id(identity: Identity) -> str | None:
    return None if identity.spiffe_id is None else str(identity.spiffe_id)


def _principal(identity: Identity) -> str:
    """What Envoy puts in `source.principal`: the peer certificate's URI SAN, else its subject."""
    if identity.kind is IdentityKind.SPIFFE:
        return _spiffe_id(identity) or identity.subject
    if identity.kind is IdentityKind.X509:
        return identity.subject
    return ""
