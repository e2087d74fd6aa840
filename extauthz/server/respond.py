"""Respond: the one mapping from a Decision to Envoy's CheckResponse.

OK replaces the caller's credential with the minted token; a denial is an HTTP response Envoy sends
back (never a gRPC error), with a JSON body naming the reason and no secret. Dynamic metadata
carries the decision into Envoy's access log, under `keymint`.

A Rego decision in opa-envoy-plugin's object shape adds what that plugin would have sent, beside
keymint's own: on OK, `headers` for the upstream, `request_headers_to_remove`,
`response_headers_to_add`, `query_parameters_to_set` and `_to_remove`; on a denial, `headers`,
`body` (in place of keymint's JSON, and then without keymint's content-type) and `http_status`;
on both, its `dynamic_metadata` beside `keymint`. Its header options are sent as the plugin sends
them (no append action), so Envoy treats them exactly as it did. keymint's `authorization` is set
last and overwrites, and no policy can remove it (`extauthz.policy.rego_decision`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from envoy.config.core.v3.base_pb2 import HeaderValue, HeaderValueOption, QueryParameter
from envoy.service.auth.v3.external_auth_pb2 import (
    CheckResponse,
    DeniedHttpResponse,
    OkHttpResponse,
)
from envoy.type.v3.http_status_pb2 import HttpStatus
from google.protobuf.struct_pb2 import Struct
from google.rpc import code_pb2, status_pb2

from extauthz.policy.rego_decision import KEYMINT_METADATA, PolicyResponse
from extauthz.server.decision import Allow, Decision, Deny

# Headers that carried the caller's own credential; upstream sees only the minted token.
CREDENTIAL_HEADERS = ("x-forwarded-client-cert",)
_OVERWRITE = HeaderValueOption.HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD

_GRPC_CODE = {
    401: code_pb2.UNAUTHENTICATED,
    403: code_pb2.PERMISSION_DENIED,
    429: code_pb2.RESOURCE_EXHAUSTED,
    503: code_pb2.UNAVAILABLE,
}


def token_ref(token: str) -> str:
    """How a token appears anywhere it might be read: a SHA-256 prefix, never the token."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:16]


def to_check_response(decision: Decision, *, request_id: str = "") -> CheckResponse:
    """`request_id` (Envoy's x-request-id) joins the metadata, as in the log and audit record."""
    if isinstance(decision, Allow):
        return _allow(decision, request_id)
    return _deny(decision, request_id)


def _header(key: str, value: str) -> HeaderValueOption:
    return HeaderValueOption(header=HeaderValue(key=key, value=value), append_action=_OVERWRITE)


def _policy_headers(pairs: Iterable[tuple[str, str]]) -> list[HeaderValueOption]:
    """A policy's headers as opa-envoy-plugin sends them: no append action."""
    return [HeaderValueOption(header=HeaderValue(key=k, value=v)) for k, v in pairs]


def _allow(allow: Allow, request_id: str = "") -> CheckResponse:
    token = allow.token
    policy = allow.response or PolicyResponse()
    metadata = {
        "decision": "allow",
        "subject": allow.identity.subject,
        "identity_kind": allow.identity.kind.value,
        "rule": allow.grant.rule,
        "audience": token.audience,
        "scope": " ".join(token.scopes),
        "jti": token.jti,
        "token": token_ref(token.token),
        "cache": "hit" if allow.cached else "miss",
    }
    if request_id:
        metadata["request_id"] = request_id
    return CheckResponse(
        status=status_pb2.Status(code=code_pb2.OK),
        ok_response=OkHttpResponse(
            headers=[
                *_policy_headers(policy.headers),
                _header("authorization", f"Bearer {token.token}"),
            ],
            headers_to_remove=[*CREDENTIAL_HEADERS, *policy.request_headers_to_remove],
            response_headers_to_add=_policy_headers(policy.response_headers_to_add),
            query_parameters_to_set=[
                QueryParameter(key=k, value=v) for k, v in policy.query_parameters_to_set
            ],
            query_parameters_to_remove=list(policy.query_parameters_to_remove),
        ),
        dynamic_metadata=_struct(metadata, policy.dynamic_metadata),
    )


def _deny(deny: Deny, request_id: str = "") -> CheckResponse:
    policy = deny.response or PolicyResponse()
    headers = [_header("cache-control", "no-store")]
    if policy.body is None:
        headers.insert(0, _header("content-type", "application/json"))
    if deny.status == 401:
        description = deny.detail.replace('"', "'")
        headers.append(
            _header(
                "www-authenticate",
                f'Bearer realm="keymint", error="invalid_token", error_description="{description}"',
            )
        )
    if deny.retry_after is not None:
        headers.append(_header("retry-after", str(deny.retry_after)))
    headers.extend(_header(k, v) for k, v in deny.headers)
    headers.extend(_policy_headers(policy.headers))
    body = policy.body
    if body is None:
        body = json.dumps({"error": deny.reason, "detail": deny.detail, "status": deny.status})
    metadata = {"decision": "deny", "status": str(deny.status), "reason": deny.reason}
    if deny.identity is not None:
        metadata["subject"] = deny.identity.subject
    if request_id:
        metadata["request_id"] = request_id
    return CheckResponse(
        status=status_pb2.Status(code=_GRPC_CODE.get(deny.status, code_pb2.PERMISSION_DENIED)),
        denied_response=DeniedHttpResponse(
            status=HttpStatus(code=deny.status),
            headers=headers,
            body=body,
        ),
        dynamic_metadata=_struct(metadata, policy.dynamic_metadata),
    )


def _struct(values: dict[str, str], policy: Mapping[str, object] | None = None) -> Struct:
    document: dict[str, Any] = {**(policy or {}), KEYMINT_METADATA: values}
    struct = Struct()
    struct.update(document)
    return struct
