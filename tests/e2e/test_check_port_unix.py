"""The sidecar layout: the gateway process's Check port is a Unix socket, and the real front
Envoy reaches it with the cluster envoy/README.md documents (substituted verbatim)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator

import pytest

from extauthz.dev.settings import DEPLOY, ORDERS
from extauthz.dev.stack import LocalStack, local_stack
from tests.e2e.replies import minted
from tests.envoy.harness import with_unix_check_port


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    directory = tmp_path_factory.mktemp("e2e-unix")
    socket = directory / "run" / "check.sock"
    with local_stack(
        directory,
        check_socket=socket,
        front_config=lambda rendered: with_unix_check_port(rendered, socket),
    ) as running:
        yield running


def socket_path(stack: LocalStack) -> str:
    return stack.gateway.env["KEYMINT_GRPC_LISTEN"].removeprefix("unix:")


def test_the_gateway_listens_on_an_owner_only_socket_and_no_tcp_port(stack: LocalStack) -> None:
    info = os.lstat(socket_path(stack))
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert info.st_uid == os.getuid()
    assert stack.gateway.grpc_port == 0  # the ready line: no TCP Check port


def test_an_svid_caller_gets_a_token_through_envoy_and_the_socket(stack: LocalStack) -> None:
    svid = stack.svid("/ns/shop/sa/web")
    token = minted(stack.front_call("GET", "/orders/v1/orders/42", certificate=svid))
    assert stack.decode(token, ORDERS)["sub"] == "spiffe://prod.test/ns/shop/sa/web"


def test_a_ci_job_gets_a_token_through_envoy_and_the_socket(stack: LocalStack) -> None:
    headers = {"authorization": f"Bearer {stack.oidc_token()}"}
    token = minted(stack.front_call("GET", "/deploy/status", headers=headers))
    assert stack.decode(token, DEPLOY)["repository_id"] == "74"


def test_envoys_health_checks_reach_the_gateway_over_the_socket(stack: LocalStack) -> None:
    assert stack.front.counter("cluster.keymint_grpc.health_check.success") > 0
    assert stack.front.counter("cluster.keymint_grpc.health_check.failure") == 0
