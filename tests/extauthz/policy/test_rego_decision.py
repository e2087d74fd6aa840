"""What a Rego decision says: opa-envoy-plugin's boolean and object, keymint's document; what
no policy may do to keymint's own response; what never reaches a log line."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from extauthz.policy.rego_decision import (
    PolicyResponse,
    RegoAnswer,
    RegoEvaluationError,
    answer_of,
    redact,
    secrets_in,
)


def test_a_boolean_is_the_whole_answer() -> None:
    assert answer_of(True) == RegoAnswer(allow=True)
    assert answer_of(False) == RegoAnswer(allow=False)


def test_an_object_with_allowed_carries_every_response_field() -> None:
    answer = answer_of(
        {
            "allowed": True,
            "headers": {"x-ext-auth-allow": "yes", "x-multi": ["a", "b"]},
            "response_headers_to_add": [{"x-served-by": "opa"}, {"set-cookie": "s=1"}],
            "request_headers_to_remove": ["x-internal", "Authorization", "x-forwarded-client-cert"],
            "query_parameters_to_set": {"tenant": "shop", "tag": ["a", "b"]},
            "query_parameters_to_remove": ["debug"],
            "dynamic_metadata": {"policy": {"rule": "readers"}},
            "scopes": ["orders:read"],
            "helper": "ignored, as opa-envoy-plugin ignores it",
        }
    )
    assert answer.allow
    assert answer.scopes == frozenset({"orders:read"})
    assert answer.response == PolicyResponse(
        headers=(("x-ext-auth-allow", "yes"), ("x-multi", "a"), ("x-multi", "b")),
        response_headers_to_add=(("x-served-by", "opa"), ("set-cookie", "s=1")),
        # keymint replaces the one and removes the other anyway: no policy removes its token.
        request_headers_to_remove=("x-internal",),
        query_parameters_to_set=(("tenant", "shop"), ("tag", "a"), ("tag", "b")),
        query_parameters_to_remove=("debug",),
        dynamic_metadata={"policy": {"rule": "readers"}},
    )


def test_a_denying_object_carries_status_body_and_headers() -> None:
    answer = answer_of(
        {
            "allowed": False,
            "http_status": 401,
            "body": "Unauthorized Request",
            "headers": {"www-authenticate": 'Basic realm="orders"', "authorization": "no"},
        }
    )
    assert not answer.allow
    assert answer.response == PolicyResponse(
        headers=(("www-authenticate", 'Basic realm="orders"'), ("authorization", "no")),
        body="Unauthorized Request",
        http_status=401,
    )


def test_keymints_package_document_is_read_as_before() -> None:
    answer = answer_of({"allow": True, "scopes": "a b", "ttl_seconds": 60, "method": "GET"})
    assert answer == RegoAnswer(allow=True, scopes=frozenset({"a", "b"}), ttl_seconds=60)
    assert answer_of({"reason": "no"}) == RegoAnswer(allow=False, reason="no")


@pytest.mark.parametrize(
    ("decision", "message"),
    [
        ("yes", "the decision is a string: it must be a boolean or an object"),
        ([True], "the decision is an array"),
        ({"allowed": "true"}, "`allowed` is a string: it must be a boolean"),
        ({"allow": 1}, "`allow` is a number: it must be a boolean"),
        ({"allowed": True, "headers": {"authorization": "Bearer forged"}}, "authorization"),
        ({"allowed": True, "headers": {"X-Forwarded-Client-Cert": "By=x"}}, "keymint's own"),
        ({"allowed": True, "headers": {"x-a": 1}}, "gives x-a a number, not a string"),
        ({"allowed": True, "headers": {"x-a": "a\r\nx-b: injected"}}, "a line break or NUL"),
        ({"allowed": True, "headers": {"bad header": "x"}}, "'bad header', which is not a header"),
        ({"allowed": True, "headers": ["x-a"]}, "`headers` holds a string: headers are objects"),
        ({"allowed": True, "request_headers_to_remove": "x-a"}, "must be an array of strings"),
        ({"allowed": False, "http_status": 999}, "999 is not an HTTP status Envoy sends"),
        ({"allowed": False, "http_status": "401"}, "'401' is not an HTTP status Envoy sends"),
        ({"allowed": False, "http_status": 401.5}, "401.5 is not an HTTP status Envoy sends"),
        ({"allowed": False, "body": {"a": 1}}, "`body` is an object: it must be a string"),
        ({"allowed": True, "dynamic_metadata": [1]}, "`dynamic_metadata` is an array"),
        ({"allowed": True, "dynamic_metadata": {"keymint": {}}}, "keymint's own decision"),
        ({"allowed": True, "query_parameters_to_set": ["a"]}, "must be an object"),
        ({"allowed": True, "scopes": [1]}, "`scopes` must be an array of strings"),
        ({"allow": True, "ttl_seconds": 0}, "`ttl_seconds` must be a positive integer"),
    ],
)
def test_malformed_decisions_are_errors_naming_the_field(decision: Any, message: str) -> None:
    with pytest.raises(RegoEvaluationError) as caught:
        answer_of(decision)
    assert message in str(caught.value)


def test_bearer_and_basic_credentials_are_what_redaction_removes() -> None:
    basic = "Basic " + base64.b64encode(b"alice:s3cret-pw").decode()
    secrets = secrets_in(
        {"authorization": basic, "cookie": "session=abc123", "x-tenant": "shop"},
        frozenset({"authorization", "cookie"}),
    )
    assert set(secrets) == {
        basic,
        basic.removeprefix("Basic "),
        "alice:s3cret-pw",
        "s3cret-pw",
        "session=abc123",
    }
    text = f"denied {basic} for alice:s3cret-pw, password s3cret-pw, session=abc123, shop"
    assert redact(text, secrets) == (
        "denied [redacted] for [redacted], password [redacted], [redacted], shop"
    )
    nested = redact({"user": {"token": [basic.split()[1]]}, "n": 1}, secrets)
    assert nested == {"user": {"token": ["[redacted]"]}, "n": 1}
    assert secrets_in({"authorization": basic}, frozenset()) == ()
