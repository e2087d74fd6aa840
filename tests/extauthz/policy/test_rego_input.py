"""The input document: everything opa-envoy-plugin builds, minus what keymint keeps out."""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any

import pytest

from extauthz.model import IdentityKind
from extauthz.policy import NO_ATTRIBUTES, PolicyHeaders, RequestAttributes, build_input
from extauthz.policy.attributes import AttributesError
from extauthz.policy.rego_input import BodyError, parse_body
from tests.extauthz.policy import github_identity, request, route, spiffe_identity

WEB = spiffe_identity("spiffe://prod.test/ns/web/sa/search")
ATTRIBUTES = RequestAttributes(
    source_address="10.1.2.3",
    destination_address="10.9.9.9",
    destination_port=8443,
    destination_principal="spiffe://prod.test/ns/edge/sa/envoy",
    scheme="https",
    protocol="HTTP/2",
    size=17,
    body='{"amount": 12.5}',
    sni="orders.example.com",
)


def test_the_input_holds_what_opa_envoy_plugin_builds() -> None:
    on = route("orders.example.com", "/orders/7?x=1", "POST", route="orders")
    headers = {"content-type": "application/json", "content-length": "16"}
    document: dict[str, Any] = build_input(request(WEB, on, headers=headers, attributes=ATTRIBUTES))
    assert document["attributes"] == {
        "source": {
            "address": {"socketAddress": {"address": "10.1.2.3"}},
            "principal": "spiffe://prod.test/ns/web/sa/search",
        },
        "destination": {
            "address": {"socketAddress": {"address": "10.9.9.9", "portValue": 8443}},
            "principal": "spiffe://prod.test/ns/edge/sa/envoy",
        },
        "request": {
            "http": {
                "method": "POST",
                "path": "/orders/7?x=1",
                "host": "orders.example.com",
                "headers": headers,
                "scheme": "https",
                "protocol": "HTTP/2",
                "size": 17,
                "body": '{"amount": 12.5}',
            }
        },
        "context_extensions": {"route": "orders"},
        "contextExtensions": {"route": "orders"},
        "tlsSession": {"sni": "orders.example.com"},
    }
    assert document["parsed_path"] == ["orders", "7"]
    assert document["parsed_query"] == {"x": ["1"]}
    assert document["parsed_body"] == {"amount": 12.5}
    assert document["truncated_body"] is False
    assert document["source_principal"] == "spiffe://prod.test/ns/web/sa/search"
    assert document["version"] == {"encoding": "protojson", "ext_authz": "v3"}


def test_per_request_values_appear_as_opa_envoy_plugin_has_them() -> None:
    attributes = RequestAttributes(
        source_address="10.1.2.3",
        source_port=40123,
        request_id="8f1c0c7e-1",
        request_time_seconds=1_700_000_000,
        request_time_nanos=5,
        raw_body=b"\x00\x01",
    )
    document: dict[str, Any] = build_input(request(WEB, route("h", "/"), attributes=attributes))
    source = document["attributes"]["source"]["address"]["socketAddress"]
    assert source == {"address": "10.1.2.3", "portValue": 40123}
    assert document["attributes"]["request"]["time"] == {"seconds": 1_700_000_000, "nanos": 5}
    http = document["attributes"]["request"]["http"]
    assert (http["id"], http["rawBody"]) == ("8f1c0c7e-1", "AAE=")


def test_a_github_caller_has_no_principal() -> None:
    document: dict[str, Any] = build_input(request(github_identity(), route("h", "/")))
    assert document["attributes"]["source"] == {"principal": ""}
    assert "source_principal" not in document
    assert document["parsed_body"] is None


def test_credential_headers_only_by_the_operators_choice() -> None:
    basic = "Basic " + base64.b64encode(b"alice:password").decode()
    headers = {"Authorization": basic, "cookie": "c=1", "x-tenant": "t"}
    stripped: dict[str, Any] = build_input(request(WEB, route("h"), headers=headers))
    assert stripped["attributes"]["request"]["http"]["headers"] == {"x-tenant": "t"}
    readable = PolicyHeaders.default(credentials=["authorization"])
    seen: dict[str, Any] = build_input(request(WEB, route("h"), headers=headers), headers=readable)
    assert seen["attributes"]["request"]["http"]["headers"] == {
        "authorization": basic,
        "x-tenant": "t",
    }


def test_the_path_pseudo_header_loses_token_parameters_with_the_path() -> None:
    on = route("h", "/cb?access_token=sekrit&state=1")
    headers = {":path": "/cb?access_token=sekrit&state=1", ":method": "GET"}
    document: dict[str, Any] = build_input(request(WEB, on, headers=headers))
    assert document["attributes"]["request"]["http"]["headers"] == {
        ":path": "/cb?state=1",
        ":method": "GET",
    }
    assert "sekrit" not in json.dumps(document)


@pytest.mark.parametrize(
    ("headers", "attributes", "parsed"),
    [
        ({"content-type": "application/json"}, RequestAttributes(body="[1, 2]"), ([1, 2], False)),
        (
            {"content-type": "application/json; charset=utf-8"},
            RequestAttributes(raw_body=b'{"a": "\xc3\xa9"}'),  # pack_as_bytes
            ({"a": "é"}, False),
        ),
        (
            {"content-type": "application/x-www-form-urlencoded"},
            RequestAttributes(body="a=1&b=2&a=3&c="),
            ({"a": ["1", "3"], "b": ["2"], "c": [""]}, False),
        ),
        (  # Envoy sent part of a longer body (allow_partial_message)
            {"content-type": "application/json", "x-envoy-auth-partial-body": "true"},
            RequestAttributes(body='{"a"'),
            (None, True),
        ),
        (
            {"content-type": "application/json", "content-length": "100"},
            RequestAttributes(body="{}"),
            (None, True),
        ),
        ({"content-type": "application/json"}, NO_ATTRIBUTES, (None, False)),
        ({"content-type": "text/plain"}, RequestAttributes(body="{}"), (None, False)),
        ({}, RequestAttributes(body="{}"), (None, False)),
        (  # opa-envoy-plugin also parses these; keymint leaves them to the policy
            {"content-type": "multipart/form-data; boundary=x"},
            RequestAttributes(body="--x--"),
            (None, False),
        ),
    ],
)
def test_bodies_are_parsed_as_opa_envoy_plugin_parses_them(
    headers: dict[str, str], attributes: RequestAttributes, parsed: tuple[object, bool]
) -> None:
    assert parse_body(headers, attributes) == parsed


@pytest.mark.parametrize(
    ("headers", "body", "message"),
    [
        ({"content-type": "application/json"}, "{not json", "the body is not JSON"),
        ({"content-type": "application/json"}, "NaN", "the body is not JSON"),
        ({"content-type": "application/json", "content-length": "x"}, "{}", "content-length"),
    ],
)
def test_a_body_that_says_json_and_is_not_is_an_error(
    headers: dict[str, str], body: str, message: str
) -> None:
    with pytest.raises(BodyError, match=message):
        parse_body(headers, RequestAttributes(body=body))


def test_attributes_travel_to_the_signers_and_back_unchanged() -> None:
    everything = RequestAttributes(
        source_address="::1",
        source_port=1,
        destination_address="10.0.0.1",
        destination_port=2,
        destination_principal="p",
        request_id="r",
        request_time_seconds=3,
        request_time_nanos=4,
        scheme="https",
        protocol="HTTP/1.1",
        size=-1,
        body="é",
        raw_body=b"\xff\x00",
        sni="s",
    )
    assert RequestAttributes.from_json(everything.to_json()) == everything
    assert RequestAttributes.from_json(b"") is NO_ATTRIBUTES


@pytest.mark.parametrize(
    "data",
    [
        b"[]",
        b"{not json",
        json.dumps({"body": "x"}).encode(),  # fields missing
        json.dumps({**json.loads(ATTRIBUTES.to_json()), "extra": 1}).encode(),
        json.dumps({**json.loads(ATTRIBUTES.to_json()), "size": "17"}).encode(),
        json.dumps({**json.loads(ATTRIBUTES.to_json()), "size": True}).encode(),
        json.dumps({**json.loads(ATTRIBUTES.to_json()), "raw_body": "***"}).encode(),
    ],
)
def test_attributes_from_elsewhere_are_read_exactly_or_refused(data: bytes) -> None:
    with pytest.raises(AttributesError):
        RequestAttributes.from_json(data)


def test_a_people_callers_list_claims_reach_the_policy_as_lists() -> None:
    person = dataclasses.replace(
        github_identity(),
        kind=IdentityKind.OIDC,
        claims={"email": "ada@example.com"},
        claim_lists={"groups": ("deployers", "oncall")},
    )

    document: dict[str, Any] = build_input(request(person, route("deploy.internal")))

    assert document["identity"]["claims"] == {
        "email": "ada@example.com",
        "groups": ["deployers", "oncall"],
    }
