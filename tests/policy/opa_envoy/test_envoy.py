"""Each opa-envoy-plugin-style policy through the real front Envoy: the gateway process (watching
its Rego file, as in production), three signer processes, envoy/envoy.yaml with envoy/README.md's
`with_request_body` and policy header rules, the echo upstream that shows what the API receives."""

from __future__ import annotations

import base64
import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from extauthz.dev.servers import Reply
from extauthz.dev.stack import LocalStack, local_stack
from tests.envoy.harness import with_rego_settings
from tests.helpers.secret_scan import read_logs, scan
from tests.policy.opa_envoy import (
    POLICIES,
    REFUSED,
    SETTINGS,
    Case,
    basic,
    case_id,
    cases,
)
from tests.policy.opa_envoy.harness import call, called, use, wait_for_log


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    directory = tmp_path_factory.mktemp("opa-envoy-e2e")
    rego = directory / "policy.rego"
    rego.write_text((POLICIES / "boolean.rego").read_text())
    env = {"REGO_FILE": str(rego), **SETTINGS}
    with local_stack(directory, extra_env=env, front_config=with_rego_settings) as running:
        yield running


@pytest.mark.parametrize(("policy", "case"), cases(), ids=list(map(case_id, cases())))
def test_through_envoy(stack: LocalStack, policy: str, case: Case) -> None:
    use(stack, policy)
    reply = call(stack, case)
    assert reply.status == case.status, reply.body
    if case.status == 200:
        received = reply.echoed()
        (authorization,) = received["authorization"]
        assert authorization.startswith("Bearer ")  # keymint's token, never the caller's
        assert "Basic " not in repr(received)
        for name, value in case.upstream_has.items():
            assert received[name] == [value]
        for name in case.upstream_lacks:
            assert name not in received
        assert reply.json()["path"] == case.path
    for name, value in case.reply_has.items():
        assert reply.headers[name] == value
    if case.body_is is not None:
        assert reply.body.decode() == case.body_is
    if case.error is not None:
        assert reply.json()["error"] == case.error


def test_a_policy_with_http_send_is_refused_and_the_one_in_force_stays(stack: LocalStack) -> None:
    use(stack, "boolean.rego")
    path = Path(stack.env["REGO_FILE"])
    in_force = path.read_text()
    logged = stack.gateway.log.stat().st_size
    path.write_text((POLICIES / REFUSED).read_text())
    try:
        refused = "calls http.send, which keymint's Rego engine (rego-cpp) does not"
        wait_for_log(stack, refused, logged)
        read = call(stack, Case("a read", "GET", "/orders/v1/orders/9", 200))
        assert read.status == 200  # boolean.rego still decides
        delete = call(stack, Case("a delete", "DELETE", "/orders/v1/orders/9", 403))
        assert (delete.status, delete.json()["error"]) == (403, "rego_denied")
    finally:
        path.write_text(in_force)  # the version in force: nothing to reload


def credential_forms(authorization: str) -> dict[str, str]:
    """Each readable form of an authorization header's credential, by what it is: the header,
    the credential after its scheme and, for basic auth, `user:password` and the password."""
    scheme, _, credential = authorization.partition(" ")
    forms = {"the header": authorization, f"the {scheme.lower()} credential": credential}
    if scheme == "Basic":
        decoded = base64.b64decode(credential).decode()
        forms["user:password"] = decoded
        forms["the password"] = decoded.partition(":")[2]
    return forms


def test_no_form_of_a_credential_policy_reads_reaches_a_log(stack: LocalStack) -> None:
    """With the authorization header readable by policy, after basic-auth and JWT decisions and
    a denial whose reason and metadata quote the header (raw, decoded, the password alone), no
    form of any credential used is in the gateway's log, its audit log, a signer's log or audit
    log, or Envoy's logs. The scanner's own test (tests/test_secret_scan.py) shows it finds a
    planted secret."""
    admin = basic("bob", "s3cret")
    wrong = basic("alice", "hunter2-guess")
    sent: list[str] = [admin, wrong]

    def through(policy: str, case: Case) -> Reply:
        use(stack, policy)
        reply, bearer = called(stack, case)
        if bearer is not None:
            sent.append(f"Bearer {bearer}")
        assert reply.status == case.status, reply.body
        return reply

    writes = Case(
        "an admin writes", "POST", "/orders/v1/orders", 200, headers={"authorization": admin}
    )
    through("basic_auth.rego", writes)
    guess = Case(
        "a wrong password", "GET", "/orders/v1/orders", 403, headers={"authorization": wrong}
    )
    through("basic_auth.rego", guess)
    through("jwt.rego", Case("octocat deploys", "POST", "/deploy/v1/releases", 200, caller="ci"))
    mallory = Case(
        "mallory", "POST", "/deploy/v1/releases", 403, caller="ci", claims={"actor": "mallory"}
    )
    through("jwt.rego", mallory)
    for case in (
        dataclasses.replace(writes, status=403),
        dataclasses.replace(guess, status=403),
        Case("a CI job", "POST", "/deploy/v1/releases", 403, caller="ci"),
    ):
        detail = through("leaky_reason.rego", case).json()["detail"]
        # The caller's own answer says what was refused, in the policy's words, redacted.
        assert detail.startswith("refused [redacted], that is "), detail
    use(stack, "boolean.rego")  # the policy the module's other tests start from
    time.sleep(1.5)  # Envoy's access log flushes each second

    secrets = {
        f"{what} #{i}": value
        for i, header in enumerate(sent)
        for what, value in credential_forms(header).items()
    }
    assert len(sent) == 2 + 3  # two passwords, three CI tokens
    directory = stack.directory
    logs = read_logs(
        [
            stack.gateway.log,
            Path(stack.env["KEYMINT_AUDIT_LOG"]),
            *(p.log for p in stack.cluster.signers.values()),
            *(stack.cluster.state_dir(i) / "audit.jsonl" for i in stack.cluster.signers),
            *directory.glob("*envoy.log"),
            *directory.glob("*envoy.access.log"),
        ]
    )
    assert len(logs) >= 2 + 3 * 2 + 2  # the gateway's, each signer's two, the front Envoy's
    audit = logs[stack.env["KEYMINT_AUDIT_LOG"]]
    assert audit.count('"reason":"rego_denied"') >= 5  # the denials above were recorded
    assert scan(logs, secrets=secrets) == []
    assert "[redacted]" in audit  # the policy's words are kept, the credential is not
