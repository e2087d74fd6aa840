"""RFC 8693 token exchange at `POST /token`: form parameters in, an OAuth JSON answer out.

No I/O here (h11's shape): `parse_exchange` turns a form body into an `ExchangeRequest` or raises
`ExchangeError`; `answer_decision` turns the pipeline's Decision into an `ExchangeAnswer`. The HTTP
edge only moves bytes.

Errors follow RFC 8693 section 2.2.2 and RFC 6749 section 5.2. RFC 8693 says a subject token that is
invalid "or unacceptable based on policy" MUST get `invalid_request`, and that `invalid_target`
SHOULD be used when no token can be issued for the requested audience; so policy denials that are
not about the audience or the scopes are `invalid_request` (not `access_denied`, which RFC 6749
defines only for the authorization endpoint). `error_description` always starts with the
pipeline's stable reason code.

| Pipeline decision                                           | HTTP | error                   |
|-------------------------------------------------------------|------|-------------------------|
| Allow                                                       | 200  | (token response)        |
| 401, any reason (subject token bad, expired, unknown kid..) | 400  | invalid_request         |
| 403 unknown_audience, audience_not_allowed                  | 400  | invalid_target          |
| 403 scope_not_allowed, no_scopes                            | 400  | invalid_scope           |
| 403 any other (no_matching_binding, no_audience,            | 400  | invalid_request         |
|     route_not_allowed, rego_denied, subject_revoked,        |      |                         |
|     signer_refused, invalid_ttl, reasons added later)       |      |                         |
| 403 rego_error, 503 internal_error (bug or broken policy)   | 500  | server_error            |
| 429 rate_limited                                            | 429  | temporarily_unavailable |
| 503 no_signing_quorum, any other 5xx                        | 503  | temporarily_unavailable |
| any other 4xx                                               | 400  | invalid_request         |

429 and 503 carry Retry-After. 5xx descriptions give the reason code only: quorum details name
signers and their failures, which is the operator's business.

| Request problem                                             | HTTP | error                   |
|-------------------------------------------------------------|------|-------------------------|
| Content-Type not application/x-www-form-urlencoded          | 400  | invalid_request         |
| body over MAX_BODY_BYTES                                    | 413  | invalid_request         |
| URL query parameters; body not UTF-8; too many fields       | 400  | invalid_request         |
| a parameter repeated (audience aside)                       | 400  | invalid_request         |
| grant_type missing                                          | 400  | invalid_request         |
| grant_type not token-exchange                               | 400  | unsupported_grant_type  |
| actor_token or actor_token_type (delegation)                | 400  | invalid_request         |
| resource                                                    | 400  | invalid_target          |
| subject_token(_type) missing; type not jwt or id_token      | 400  | invalid_request         |
| more than one audience                                      | 400  | invalid_target          |
| audience or scope over MAX_AUDIENCE_CHARS / MAX_SCOPE_CHARS | 400  | invalid_request         |
| requested_token_type not access_token or jwt                | 400  | invalid_request         |
| scope not RFC 6749 scope-tokens separated by single spaces  | 400  | invalid_scope           |

Every answer carries `Cache-Control: no-store` and `Pragma: no-cache` (RFC 6749 section 5.1).
Nothing here puts a presented token into an answer or an exception message.
"""

# ruff: noqa: S105  (the token-type and grant-type URNs are names, not passwords)

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from extauthz.errors import ExtAuthzError
from extauthz.server.decision import Allow, Decision, Deny

GRANT_TYPE_TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
TOKEN_TYPE_JWT = "urn:ietf:params:oauth:token-type:jwt"
TOKEN_TYPE_ID_TOKEN = "urn:ietf:params:oauth:token-type:id_token"
TOKEN_TYPE_ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"
SUBJECT_TOKEN_TYPES = frozenset({TOKEN_TYPE_JWT, TOKEN_TYPE_ID_TOKEN})
REQUESTED_TOKEN_TYPES = frozenset({TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_JWT})
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
MAX_BODY_BYTES = 16 * 1024
MAX_FIELDS = 32  # a real exchange sends at most 8 parameters
MAX_DESCRIPTION = 300
# An audience is one URI or name, a scope a few scope-tokens. A longer value is no real request,
# and refused here it never reaches the policy, whose denial would quote it into the audit log.
MAX_AUDIENCE_CHARS = 1024
MAX_SCOPE_CHARS = 1024

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

_AUDIENCE_REASONS = frozenset({"unknown_audience", "audience_not_allowed"})
_SCOPE_REASONS = frozenset({"scope_not_allowed", "no_scopes"})
_SERVER_FAULT_REASONS = frozenset({"internal_error", "rego_error"})
# RFC 6749 appendix A.4: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
# RFC 6749 section 5.2: error_description is %x20-21 / %x23-5B / %x5D-7E
_NOT_DESCRIPTION_CHARS = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")


@dataclass(frozen=True, slots=True)
class ExchangeRequest:
    """A well-formed RFC 8693 request, reduced to what the pipeline needs."""

    subject_token: str = field(repr=False)
    audience: str | None
    scopes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ExchangeAnswer:
    status: int
    body: Mapping[str, object]
    headers: Mapping[str, str]


class ExchangeError(ExtAuthzError):
    """A request refused before the pipeline saw it: an OAuth error code and a safe description."""

    def __init__(self, error: str, description: str, *, status: int = 400) -> None:
        self.error = error
        self.description = description
        self.status = status
        super().__init__(f"{error}: {description}")

    def answer(self) -> ExchangeAnswer:
        return error_answer(self.status, self.error, self.description)


def error_answer(
    status: int, error: str, description: str, *, retry_after: int | None = None
) -> ExchangeAnswer:
    headers = dict(NO_STORE)
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    body = {"error": error, "error_description": safe_description(description)}
    return ExchangeAnswer(status, body, headers)


def safe_description(text: str) -> str:
    """Only the characters RFC 6749 allows in error_description, and not too many of them."""
    text = _NOT_DESCRIPTION_CHARS.sub("?", text.replace('"', "'").replace("\\", "/"))
    if len(text) > MAX_DESCRIPTION:
        text = text[: MAX_DESCRIPTION - 3] + "..."
    return text


def body_too_large(limit: int) -> ExchangeError:
    return ExchangeError("invalid_request", f"the request body is over {limit} bytes", status=413)


def parse_exchange(
    content_type: str,
    body: bytes,
    query_string: str = "",
    *,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> ExchangeRequest:
    """Validate a token-exchange form (RFC 8693 section 2.1); ExchangeError names the problem."""
    media_type = content_type.partition(";")[0].strip().lower()
    if media_type != FORM_CONTENT_TYPE:
        raise ExchangeError("invalid_request", f"the Content-Type must be {FORM_CONTENT_TYPE}")
    if query_string:
        # A credential in a URL ends up in proxy and browser logs; refuse rather than read it.
        raise ExchangeError("invalid_request", "parameters belong in the form body, not the URL")
    if len(body) > max_body_bytes:
        raise body_too_large(max_body_bytes)
    params = _form_parameters(body)
    _check_grant(params)
    subject_token = _single(params, "subject_token")
    subject_token_type = _single(params, "subject_token_type")
    if subject_token is None:
        raise ExchangeError("invalid_request", "subject_token is required")
    if subject_token_type is None:
        raise ExchangeError("invalid_request", "subject_token_type is required")
    if subject_token_type not in SUBJECT_TOKEN_TYPES:
        raise ExchangeError(
            "invalid_request",
            f"subject_token_type {subject_token_type!r} is not supported; use "
            f"{TOKEN_TYPE_JWT} or {TOKEN_TYPE_ID_TOKEN}",
        )
    requested = _single(params, "requested_token_type")
    if requested is not None and requested not in REQUESTED_TOKEN_TYPES:
        raise ExchangeError(
            "invalid_request",
            f"requested_token_type {requested!r} is not supported; keymint issues "
            f"{TOKEN_TYPE_JWT} access tokens",
        )
    audiences = params.get("audience", [])
    if len(audiences) > 1:
        raise ExchangeError("invalid_target", "at most one audience may be requested")
    audience = _bounded("audience", audiences[0] if audiences else None, MAX_AUDIENCE_CHARS)
    scope = _bounded("scope", _single(params, "scope"), MAX_SCOPE_CHARS)
    return ExchangeRequest(subject_token=subject_token, audience=audience, scopes=_scopes(scope))


def _form_parameters(body: bytes) -> dict[str, list[str]]:
    try:
        text = body.decode("utf-8")
        # keep_blank_values=False: RFC 6749 section 3.1 treats a parameter without a value as
        # omitted. errors="strict": a percent-escape that is not UTF-8 is refused, not replaced.
        pairs = parse_qsl(text, max_num_fields=MAX_FIELDS, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise ExchangeError("invalid_request", "the form body is not UTF-8") from None
    except ValueError:
        raise ExchangeError("invalid_request", f"the form has over {MAX_FIELDS} fields") from None
    params: dict[str, list[str]] = {}
    for name, value in pairs:
        params.setdefault(name, []).append(value)
    return params


def _check_grant(params: Mapping[str, list[str]]) -> None:
    grant_type = _single(params, "grant_type")
    if grant_type is None:
        raise ExchangeError("invalid_request", "grant_type is required")
    if grant_type != GRANT_TYPE_TOKEN_EXCHANGE:
        raise ExchangeError(
            "unsupported_grant_type", f"only {GRANT_TYPE_TOKEN_EXCHANGE} is supported"
        )
    if "actor_token" in params or "actor_token_type" in params:
        raise ExchangeError("invalid_request", "delegation is not supported: send no actor_token")
    if "resource" in params:
        raise ExchangeError(
            "invalid_target", "the resource parameter is not supported; use audience"
        )


def _single(params: Mapping[str, list[str]], name: str) -> str | None:
    """One value or None; RFC 6749 section 3.2 forbids repeating a parameter."""
    values = params.get(name, [])
    if len(values) > 1:
        raise ExchangeError("invalid_request", f"{name} is repeated")
    return values[0] if values else None


def _bounded(name: str, value: str | None, limit: int) -> str | None:
    """RFC 6749 section 5.2: a request "otherwise malformed" is invalid_request."""
    if value is not None and len(value) > limit:
        raise ExchangeError("invalid_request", f"{name} is over {limit} characters")
    return value


def _scopes(scope: str | None) -> tuple[str, ...]:
    if scope is None:
        return ()
    tokens = scope.split(" ")
    if not all(_SCOPE_TOKEN.fullmatch(token) for token in tokens):
        raise ExchangeError("invalid_scope", "scope must be scope-tokens separated by one space")
    return tuple(dict.fromkeys(tokens))  # de-duplicated, order kept


def answer_decision(decision: Decision, now: float) -> ExchangeAnswer:
    """The one mapping from a pipeline Decision to the /token answer (see the module table)."""
    if isinstance(decision, Allow):
        return _token_answer(decision, now)
    return _denial_answer(decision)


def _token_answer(allow: Allow, now: float) -> ExchangeAnswer:
    token = allow.token
    body = {
        "access_token": token.token,
        "issued_token_type": TOKEN_TYPE_JWT,
        # RFC 8693 suggests N_A for tokens that are not access tokens; ours is used as a bearer
        # access token (RFC 9068 `at+jwt`), so "Bearer" is what clients must send it as.
        "token_type": "Bearer",
        "expires_in": max(0, int(token.expires_at - now)),
        "scope": " ".join(token.scopes),
    }
    return ExchangeAnswer(200, body, dict(NO_STORE))


def _denial_answer(deny: Deny) -> ExchangeAnswer:
    described = f"{deny.reason}: {deny.detail}"
    if deny.reason in _SERVER_FAULT_REASONS:
        # The detail of a server fault is for the operator's log, not for the caller.
        return error_answer(500, "server_error", deny.reason)
    if deny.status == 429:
        return error_answer(
            429, "temporarily_unavailable", described, retry_after=deny.retry_after or 1
        )
    if deny.status >= 500:
        # Quorum details name signers and their failures: internal topology, not for callers.
        return error_answer(
            503,
            "temporarily_unavailable",
            f"{deny.reason}: try again later",
            retry_after=deny.retry_after or 1,
        )
    if deny.status == 403 and deny.reason in _AUDIENCE_REASONS:
        return error_answer(400, "invalid_target", described)
    if deny.status == 403 and deny.reason in _SCOPE_REASONS:
        return error_answer(400, "invalid_scope", described)
    return error_answer(400, "invalid_request", described)
