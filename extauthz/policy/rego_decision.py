"""What a Rego decision says, in either of the shapes policies are written in.

- opa-envoy-plugin's: a boolean, or an object with `allowed` and optionally `headers`,
  `response_headers_to_add`, `request_headers_to_remove`, `query_parameters_to_set`,
  `query_parameters_to_remove`, `body`, `http_status` and `dynamic_metadata` (a `PolicyResponse`:
  what the gateway's answer to Envoy carries besides the minted token);
- keymint's: the package document, `allow` and optionally `audience`, `scopes`, `ttl_seconds` and
  `reason` (the grant; an opa-envoy-plugin object may name these too).

Only the grant concerns the signers; a `PolicyResponse` is the gateway's. Nothing in it can touch
keymint's own headers: setting `authorization` (the minted token) or `x-forwarded-client-cert` is
an error, removing them is dropped (keymint replaces the one and removes the other anyway), and
the dynamic metadata namespace `keymint` is keymint's.
"""

from __future__ import annotations

import base64
import binascii
import http
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from envoy.type.v3.http_status_pb2 import StatusCode

from extauthz.errors import ExtAuthzError

KEYMINT_HEADERS: Final = frozenset({"authorization", "x-forwarded-client-cert"})
KEYMINT_METADATA: Final = "keymint"  # the dynamic metadata namespace of keymint's own decision
REDACTED: Final = "[redacted]"
_HEADER_NAME = re.compile(r":?[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an RFC 9110 token, or a pseudo-header
_BAD_VALUE = re.compile(r"[\r\n\x00]")
_ENVOY_STATUSES = frozenset(StatusCode.values()) - {0}


class RegoEvaluationError(ExtAuthzError):
    """A Rego policy failed to produce a decision: a policy or engine fault, never an allow."""


class RegoUndefined(RegoEvaluationError):
    """The decision has no value for this input: a denial of its own (`rego_undefined`)."""


@dataclass(frozen=True, slots=True)
class PolicyResponse:
    """An opa-envoy-plugin decision's response fields. On an allow, `headers` go to the upstream
    with the request; on a denial, to the caller with `body` and `http_status`."""

    headers: tuple[tuple[str, str], ...] = ()
    response_headers_to_add: tuple[tuple[str, str], ...] = ()
    request_headers_to_remove: tuple[str, ...] = ()
    query_parameters_to_set: tuple[tuple[str, str], ...] = ()
    query_parameters_to_remove: tuple[str, ...] = ()
    body: str | None = None
    http_status: int | None = None
    dynamic_metadata: Mapping[str, object] | None = field(default=None, hash=False)


@dataclass(frozen=True, slots=True)
class RegoAnswer:
    allow: bool
    audience: str | None = None
    scopes: frozenset[str] | None = None
    ttl_seconds: int | None = None
    reason: str | None = None
    response: PolicyResponse | None = None


def answer_of(decision: object) -> RegoAnswer:
    """The answer a decision value gives; RegoEvaluationError names what is malformed."""
    if isinstance(decision, bool):
        return RegoAnswer(allow=decision)
    if not isinstance(decision, dict):
        raise RegoEvaluationError(
            f"the decision is {_kind(decision)}: it must be a boolean or an object"
        )
    if "allowed" in decision:  # opa-envoy-plugin's object
        allowed = decision["allowed"]
        if not isinstance(allowed, bool):
            raise RegoEvaluationError(f"`allowed` is {_kind(allowed)}: it must be a boolean")
        return _grant_fields(decision, allowed, _response(decision, allowed))
    allow = decision.get("allow", False)  # keymint's package document
    if not isinstance(allow, bool):
        raise RegoEvaluationError(f"`allow` is {_kind(allow)}: it must be a boolean")
    return _grant_fields(decision, allow, None)


def _grant_fields(
    document: Mapping[str, object], allow: bool, response: PolicyResponse | None
) -> RegoAnswer:
    audience = document.get("audience")
    scopes = document.get("scopes")
    ttl = document.get("ttl_seconds")
    reason = document.get("reason")
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
        response=response,
    )


def _response(document: Mapping[str, object], allowed: bool) -> PolicyResponse:
    headers = _headers(document, "headers")
    if allowed:
        set_here = sorted({name.lower() for name, _ in headers} & KEYMINT_HEADERS)
        if set_here:
            raise RegoEvaluationError(
                f"`headers` sets {', '.join(set_here)}: keymint's own (the minted token, the "
                "caller's certificate), which no policy may replace"
            )
    removed = _strings(document, "request_headers_to_remove")
    status = document.get("http_status")
    if status is not None:
        if type(status) is not int or status not in _ENVOY_STATUSES:
            raise RegoEvaluationError(f"`http_status` {status!r} is not an HTTP status Envoy sends")
        try:
            http.HTTPStatus(status)
        except ValueError:
            raise RegoEvaluationError(f"`http_status` {status} is not an HTTP status") from None
    body = document.get("body")
    if body is not None and not isinstance(body, str):
        raise RegoEvaluationError(f"`body` is {_kind(body)}: it must be a string")
    metadata = document.get("dynamic_metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise RegoEvaluationError(f"`dynamic_metadata` is {_kind(metadata)}, not an object")
        if KEYMINT_METADATA in metadata:
            raise RegoEvaluationError(
                f"`dynamic_metadata` uses the key {KEYMINT_METADATA!r}: keymint's own decision"
            )
    return PolicyResponse(
        headers=headers,
        response_headers_to_add=_headers(document, "response_headers_to_add"),
        request_headers_to_remove=tuple(n for n in removed if n.lower() not in KEYMINT_HEADERS),
        query_parameters_to_set=_pairs(document, "query_parameters_to_set"),
        query_parameters_to_remove=_strings(document, "query_parameters_to_remove"),
        body=body,
        http_status=status,
        dynamic_metadata=metadata,
    )


def _headers(document: Mapping[str, object], name: str) -> tuple[tuple[str, str], ...]:
    """An object of name -> value or [values], or an array of such objects."""
    value = document.get(name)
    if value is None:
        return ()
    objects = value if isinstance(value, list) else [value]
    pairs: list[tuple[str, str]] = []
    for item in objects:
        if not isinstance(item, dict):
            raise RegoEvaluationError(f"`{name}` holds {_kind(item)}: headers are objects")
        pairs.extend(_object_pairs(item, name))
    for header, text in pairs:
        if not _HEADER_NAME.fullmatch(header):
            raise RegoEvaluationError(f"`{name}` names {header!r}, which is not a header name")
        if _BAD_VALUE.search(text):
            raise RegoEvaluationError(f"`{name}` gives {header} a line break or NUL")
    return tuple(pairs)


def _pairs(document: Mapping[str, object], name: str) -> tuple[tuple[str, str], ...]:
    value = document.get(name)
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise RegoEvaluationError(f"`{name}` is {_kind(value)}: it must be an object")
    return tuple(_object_pairs(value, name))


def _object_pairs(item: Mapping[str, object], name: str) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for key, values in item.items():
        for value in values if isinstance(values, list) else [values]:
            if not isinstance(value, str):
                raise RegoEvaluationError(f"`{name}` gives {key} {_kind(value)}, not a string")
            pairs.append((key, value))
    return pairs


def _strings(document: Mapping[str, object], name: str) -> tuple[str, ...]:
    value = document.get(name)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RegoEvaluationError(f"`{name}` must be an array of strings")
    return tuple(value)


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", str: "a string", list: "an array", dict: "an object"}.get(
        type(value), "a number"
    )


# --- redaction ---------------------------------------------------------------------------------


def secrets_in(headers: Mapping[str, str], names: frozenset[str]) -> tuple[str, ...]:
    """What must never reach a log line from these credential headers: each value, its
    credential after the scheme (`Bearer x` -> `x`) and, for basic auth, the decoded
    `user:password` and the password. Longest first, so a value is replaced before its parts."""
    found: set[str] = set()
    for name, value in headers.items():
        if name.lower() not in names or not value.strip():
            continue
        found.add(value)
        scheme, _, credential = value.strip().partition(" ")
        credential = credential.strip()
        if credential:
            found.add(credential)
        if scheme.lower() == "basic" and credential:
            try:
                decoded = base64.b64decode(credential, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                continue
            found.add(decoded)
            password = decoded.partition(":")[2]
            if len(password) >= 4:  # a shorter one would redact half of every message
                found.add(password)
    return tuple(sorted(found, key=len, reverse=True))


def redact(value: object, secrets: tuple[str, ...]) -> object:
    """`value` (strings, arrays, objects) with every secret replaced by `[redacted]`."""
    if not secrets:
        return value
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, list):
        return [redact(item, secrets) for item in value]
    if isinstance(value, dict):
        return {redact(k, secrets): redact(v, secrets) for k, v in value.items()}
    return value


def redact_text(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return text
