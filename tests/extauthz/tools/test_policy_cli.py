"""`extauthz policy test`: Rego `test_` rules and JSON examples, with exit codes a CI job reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from extauthz.cli import main
from extauthz.policy import PolicyError, parse_policy
from tests.conftest import REPO
from tests.extauthz.policy import policy_document

EXAMPLE_SCOPES = "orders:read payments:charge payments:read deploy:read deploy:write deploy:preview"

POLICY = """package envoy.authz

import rego.v1

default allow := false

allow if allowed(input.attributes.request.http)

allowed(http) if {
    http.method == "GET"
    startswith(http.path, "/orders/")
}

user(header) := split(base64.decode(substring(header, count("Basic "), -1)), ":")[0]
"""
TESTS = """package envoy.authz_test

import rego.v1

import data.envoy.authz

test_get_orders if authz.allowed({"method": "GET", "path": "/orders/1"})

test_post_is_refused if not authz.allowed({"method": "POST", "path": "/orders/1"})

test_basic_user if authz.user("Basic YWxpY2U6cGFzc3dvcmQ=") == "alice"
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    return path


def test_the_shipped_example_policies_pass(capsys: pytest.CaptureFixture[str]) -> None:
    policy = REPO / "policy"
    files = [str(policy / "example.json"), str(policy / "example.rego")]
    assert main(["policy", "test", "--allowed-scopes", EXAMPLE_SCOPES, *files]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "PASS: 6/6"


def test_rego_test_rules_pass_and_fail_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = write(tmp_path, "authz.rego", POLICY)
    tests = write(tmp_path, "authz_test.rego", TESTS)
    assert main(["policy", "test", "-v", str(policy), str(tests)]) == 0
    out = capsys.readouterr().out
    assert "data.envoy.authz_test.test_basic_user: PASS" in out
    assert out.splitlines()[-1] == "PASS: 3/3"

    write(
        tmp_path,
        "authz_test.rego",
        TESTS + '\ntest_wrong if authz.user("Basic Ym9iOng=") == "eve"\n',
    )
    assert main(["policy", "test", str(policy), str(tests)]) == 1
    out = capsys.readouterr().out
    assert "data.envoy.authz_test.test_wrong: FAIL (undefined)" in out
    assert out.splitlines()[-2:] == ["PASS: 3/4", "FAIL: 1/4"]


def test_a_wrong_example_fails_saying_what_was_expected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = policy_document()
    document["examples"] = [
        {
            "name": "web reads orders for ten minutes",
            "identity": {"spiffe_id": "spiffe://prod.test/ns/web/sa/search"},
            "request": {"host": "orders.example.com", "path": "/orders/1"},
            "expect": {"allow": True, "scopes": ["orders:read"], "ttl_seconds": 900},
        },
        {
            "name": "web may not deploy",
            "identity": {"spiffe_id": "spiffe://prod.test/ns/web/sa/search"},
            "request": {"host": "deploy.example.com", "path": "/api/x"},
            "expect": {"deny": "audience_not_allowed"},
        },
    ]
    policy = write(tmp_path, "policy.json", json.dumps(document))
    assert main(["policy", "test", str(policy)]) == 1
    out = capsys.readouterr().out
    assert (
        f"{policy}: example 'web reads orders for ten minutes': FAIL (allow "
        "https://orders.example.com [orders:read] 600s by web-reads/reader; expected "
        "ttl_seconds 900)"
    ) in out
    assert out.splitlines()[-2:] == ["PASS: 1/2", "FAIL: 1/2"]


def test_examples_alone_test_a_rego_policy_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    examples = {
        "examples": [
            {
                "name": "a GET on the route's audience",
                "identity": {"spiffe_id": "spiffe://prod.test/ns/web/sa/search"},
                "request": {
                    "path": "/orders/1",
                    "context_extensions": {"audience": "https://orders", "scopes": "orders:read"},
                },
                "expect": {"allow": True, "audience": "https://orders", "scopes": ["orders:read"]},
            },
            {
                "name": "a POST",
                "identity": {"spiffe_id": "spiffe://prod.test/ns/web/sa/search"},
                "request": {"path": "/orders/1", "method": "POST"},
                "expect": {"deny": "rego_denied"},
            },
        ]
    }
    cases = write(tmp_path, "cases.json", json.dumps(examples))
    policy = write(tmp_path, "authz.rego", POLICY)
    env = ["--query", "envoy/authz/allow", "--allowed-scopes", "orders:read"]
    assert main(["policy", "test", *env, str(cases), str(policy)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "PASS: 2/2"


def test_with_input_that_crashes_the_engine_is_named_with_the_way_around_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = write(tmp_path, "authz.rego", POLICY)
    tests = write(
        tmp_path,
        "authz_test.rego",
        "package envoy.authz_test\nimport rego.v1\nimport data.envoy.authz\n"
        'test_get if { authz.allow with input as {"attributes": {}} }\n',
    )
    assert main(["policy", "test", str(policy), str(tests)]) == 2
    error = capsys.readouterr().err
    assert "the Rego engine crashed compiling it" in error
    assert "test functions with arguments instead, or give the decision's inputs as JSON" in error


def test_nothing_to_test_is_a_failure_and_no_file_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = write(tmp_path, "policy.json", json.dumps(policy_document()))
    assert main(["policy", "test", str(policy)]) == 1
    assert capsys.readouterr().out == "no test_ rules and no examples found\n"
    monkeypatch.delenv("POLICY_FILE", raising=False)
    monkeypatch.delenv("REGO_FILE", raising=False)
    assert main(["policy", "test"]) == 2
    assert "no files: name them, or set POLICY_FILE and REGO_FILE" in capsys.readouterr().err


def test_the_gateways_settings_name_the_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tests in the policy's own file and package, as many OPA users keep them.
    inline = POLICY + '\ntest_get_orders if allowed({"method": "GET", "path": "/orders/1"})\n'
    monkeypatch.setenv("REGO_FILE", str(write(tmp_path, "authz.rego", inline)))
    monkeypatch.setenv("KEYMINT_REGO_QUERY", "envoy/authz/allow")
    monkeypatch.delenv("POLICY_FILE", raising=False)
    assert main(["policy", "test"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "PASS: 1/1"


def test_a_malformed_example_stops_the_policy_loading() -> None:
    document = policy_document()
    document["examples"] = [{"name": "x", "identity": {"email": "a@b"}, "expect": {"deny": "x"}}]
    with pytest.raises(PolicyError) as caught:
        parse_policy(json.dumps(document), "policy.json")
    assert str(caught.value) == (
        "policy.json: examples[0]: `identity.email` is not an identity this gateway knows"
    )
