"""The one mapping to Envoy's CheckResponse: keymint's own answer, and an opa-envoy-plugin
decision's fields beside it, as that plugin sends them."""

from __future__ import annotations

import json

from envoy.config.core.v3.base_pb2 import HeaderValueOption
from google.protobuf.json_format import MessageToDict
from google.rpc import code_pb2

from extauthz.model import Grant
from extauthz.policy import PolicyResponse
from extauthz.server.decision import Allow, Deny
from extauthz.server.respond import to_check_response
from extauthz.server.tokencache import MintedToken
from tests.extauthz.policy import spiffe_identity

CALLER = spiffe_identity("spiffe://prod.test/ns/web/sa/search")
TOKEN = MintedToken("header.claims.signature", "j-1", CALLER.subject, "aud", ("a",), 1, 901, (1, 2))
OVERWRITE = HeaderValueOption.HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD
DECORATED = PolicyResponse(
    headers=(("x-validated-by", "opa"), ("x-multi", "1"), ("x-multi", "2")),
    response_headers_to_add=(("x-served-by", "keymint"),),
    request_headers_to_remove=("x-internal",),
    query_parameters_to_set=(("tenant", "shop"),),
    query_parameters_to_remove=("debug",),
    dynamic_metadata={"policy": {"rule": "readers", "n": 1}},
)


def allow(response: PolicyResponse | None = None) -> Allow:
    return Allow(CALLER, Grant("aud", ("a",), 900, "r"), TOKEN, False, response)


def pairs(options: object) -> list[tuple[str, str, int]]:
    return [(o.header.key, o.header.value, o.append_action) for o in options]  # type: ignore[attr-defined]


def test_an_allow_without_a_policy_response_is_keymints_alone() -> None:
    ok = to_check_response(allow()).ok_response
    assert pairs(ok.headers) == [("authorization", "Bearer header.claims.signature", OVERWRITE)]
    assert list(ok.headers_to_remove) == ["x-forwarded-client-cert"]
    assert not ok.response_headers_to_add
    assert not ok.query_parameters_to_set


def test_an_allow_carries_the_policys_fields_beside_the_token() -> None:
    response = to_check_response(allow(DECORATED))
    assert response.status.code == code_pb2.OK
    ok = response.ok_response
    # As opa-envoy-plugin sends them: no append action; keymint's token last, overwriting.
    assert pairs(ok.headers) == [
        ("x-validated-by", "opa", 0),
        ("x-multi", "1", 0),
        ("x-multi", "2", 0),
        ("authorization", "Bearer header.claims.signature", OVERWRITE),
    ]
    assert [o.HasField("append") for o in ok.headers[:3]] == [False, False, False]
    assert list(ok.headers_to_remove) == ["x-forwarded-client-cert", "x-internal"]
    assert pairs(ok.response_headers_to_add) == [("x-served-by", "keymint", 0)]
    assert [(q.key, q.value) for q in ok.query_parameters_to_set] == [("tenant", "shop")]
    assert list(ok.query_parameters_to_remove) == ["debug"]
    metadata = MessageToDict(response.dynamic_metadata)
    assert metadata["policy"] == {"rule": "readers", "n": 1.0}
    assert metadata["keymint"]["decision"] == "allow"


def test_a_policy_denial_sends_its_status_headers_and_body_in_place_of_keymints() -> None:
    policy = PolicyResponse(
        headers=(("www-authenticate", 'Basic realm="orders"'),),
        body="Unauthorized Request",
        http_status=401,
        dynamic_metadata={"why": "no password"},
    )
    deny = Deny(401, "rego_denied", "wrong password", CALLER, response=policy)
    response = to_check_response(deny)
    denied = response.denied_response
    assert denied.status.code == 401
    assert denied.body == "Unauthorized Request"
    headers = [(o.header.key, o.header.value) for o in denied.headers]
    assert ("content-type", "application/json") not in headers  # not keymint's JSON body
    assert ("www-authenticate", 'Basic realm="orders"') in headers
    assert ("cache-control", "no-store") in headers
    metadata = MessageToDict(response.dynamic_metadata)
    assert metadata["why"] == "no password"
    assert metadata["keymint"] == {
        "decision": "deny",
        "status": "401",
        "reason": "rego_denied",
        "subject": CALLER.subject,
    }


def test_a_policy_denial_without_a_body_keeps_keymints_json() -> None:
    policy = PolicyResponse(headers=(("x-denied-by", "opa"),))
    response = to_check_response(Deny(403, "rego_denied", "no", CALLER, response=policy))
    denied = response.denied_response
    assert json.loads(denied.body) == {"error": "rego_denied", "detail": "no", "status": 403}
    headers = [(o.header.key, o.header.value) for o in denied.headers]
    assert headers[0] == ("content-type", "application/json")
    assert ("x-denied-by", "opa") in headers
