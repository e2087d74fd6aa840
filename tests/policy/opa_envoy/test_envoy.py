"""Each opa-envoy-plugin-style policy through the real front Envoy: the gateway process (watching
its Rego file, as in production), three signer processes, envoy/envoy.yaml with envoy/README.md's
`with_request_body` and policy header rules, the echo upstream that shows what the API receives."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from extauthz.dev.stack import LocalStack, local_stack
from tests.envoy.harness import with_rego_settings
from tests.policy.opa_envoy import (
    POLICIES,
    REFUSED,
    SETTINGS,
    Case,
    case_id,
    cases,
)
from tests.policy.opa_envoy.harness import call, use, wait_for_log


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
