"""Attacks on the gateway's Check port: real gateway process, real signers, real Envoy.

The hole this closes: certificate evidence is a public document, so whoever can send a CheckRequest
can put a victim's PEM in `attributes.source.certificate` and receive a token in the victim's name.
The attacker here holds what the gateway holds (the coordinator's certificate and key for the
signer mesh, the gateway's own Check port certificate and key, its settings) and reaches the Check
port directly, not through Envoy. Every attempt carries the victim's certificate; each must fail
with its named refusal, and no Check may reach the pipeline (the gateway's audit log, which records
every decision, does not grow). The positive controls show Envoy's identity still gets tokens.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from envoy.service.auth.v3 import external_auth_pb2_grpc
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from extauthz.config import CHECK_TLS_VARIABLES
from extauthz.dev.calls import check_request, envoy_channel
from extauthz.dev.settings import ORDERS, check_port_pki, root_ca, valid_now
from extauthz.dev.stack import LocalStack, local_stack
from signer.devca import dns_name, envoy_name, gateway_name, spiffe_id
from tests.conftest import REPO
from tests.e2e.replies import minted
from tests.helpers.certs import IssuedCertificate

VICTIM = "/ns/shop/sa/web"
ChannelFactory = Callable[[], grpc.aio.Channel]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with local_stack(tmp_path_factory.mktemp("adversary-check-port")) as running:
        yield running


# --- what the attacker holds and does ---------------------------------------------------------


def address(stack: LocalStack) -> str:
    return f"127.0.0.1:{stack.gateway.grpc_port}"


def victim_check(stack: LocalStack) -> CheckRequest:
    """What Envoy would send for the victim's mTLS call: its certificate, which is public."""
    return check_request(certificate=stack.svid(VICTIM), route_key="orders")


def tls_channel(
    stack: LocalStack, *, key: bytes | None = None, chain: bytes | None = None
) -> ChannelFactory:
    """A TLS channel that trusts the gateway's real server certificate (public knowledge), with
    the given client certificate or none."""
    ca = check_port_pki(stack.directory)[gateway_name()].ca.read_bytes()

    def make() -> grpc.aio.Channel:
        credentials = grpc.ssl_channel_credentials(ca, key, chain)
        options = [("grpc.ssl_target_name_override", dns_name(gateway_name()))]
        return grpc.aio.secure_channel(address(stack), credentials, options=options)

    return make


def key_pem(issued: IssuedCertificate) -> bytes:
    return issued.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def attempt_check(
    stack: LocalStack, channel: ChannelFactory, request: CheckRequest
) -> CheckResponse | grpc.aio.AioRpcError:
    async def call() -> CheckResponse:
        async with channel() as opened:
            stub = external_auth_pb2_grpc.AuthorizationStub(opened)
            response: CheckResponse = await stub.Check(request, timeout=5)
            return response

    try:
        return stack.background.run(call())
    except grpc.aio.AioRpcError as error:
        return error


def audit_entries(stack: LocalStack) -> int:
    return Path(stack.env["KEYMINT_AUDIT_LOG"]).read_text().count("\n")


class GatewayLog:
    """What the gateway process writes to its log from now on (gRPC's handshake errors too)."""

    def __init__(self, stack: LocalStack) -> None:
        self._path = stack.gateway.log
        self._offset = self._path.stat().st_size

    def wait_for(self, text: str, timeout: float = 5.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            with self._path.open("rb") as log:
                log.seek(self._offset)
                new = log.read().decode(errors="replace")
            if text in new or time.monotonic() > deadline:
                return new
            time.sleep(0.05)


def refused_in_the_handshake(
    stack: LocalStack, channel: ChannelFactory, reason: str
) -> grpc.aio.AioRpcError:
    """The Check gets no answer at all: UNAVAILABLE on the client, the TLS library's reason in
    the gateway's log, nothing in the audit log."""
    entries = audit_entries(stack)
    log = GatewayLog(stack)
    outcome = attempt_check(stack, channel, victim_check(stack))
    assert isinstance(outcome, grpc.aio.AioRpcError), outcome
    assert outcome.code() == grpc.StatusCode.UNAVAILABLE
    written = log.wait_for(reason)
    handshakes = [line for line in written.splitlines() if "Handshake failed" in line]
    assert any(reason in line for line in handshakes), written
    assert audit_entries(stack) == entries
    return outcome


# --- the attacks ------------------------------------------------------------------------------


def test_a_plaintext_check_to_the_mtls_port_gets_no_answer(stack: LocalStack) -> None:
    outcome = refused_in_the_handshake(
        stack, lambda: grpc.aio.insecure_channel(address(stack)), "WRONG_VERSION_NUMBER"
    )
    assert "Socket closed" in (outcome.details() or "")


def test_tls_without_a_client_certificate_is_refused_in_the_handshake(stack: LocalStack) -> None:
    refused_in_the_handshake(stack, tls_channel(stack), "PEER_DID_NOT_RETURN_A_CERTIFICATE")


def test_the_coordinators_certificate_from_the_signer_ca_is_refused_in_the_handshake(
    stack: LocalStack,
) -> None:
    """The gateway's certificate for the signer mesh is from another CA than Envoy's."""
    coordinator = stack.cluster.coordinator_tls
    channel = tls_channel(
        stack, key=coordinator.key.read_bytes(), chain=coordinator.cert.read_bytes()
    )
    refused_in_the_handshake(stack, channel, "CERTIFICATE_VERIFY_FAILED")


def test_a_forged_envoy_certificate_from_another_ca_is_refused_in_the_handshake(
    stack: LocalStack,
) -> None:
    """Envoy's exact SPIFFE ID, issued by a CA of the attacker's own."""
    forged = root_ca("keymint.internal").issue(
        uris=[spiffe_id(envoy_name())], dns_names=[dns_name(envoy_name())], **valid_now()
    )
    channel = tls_channel(stack, key=key_pem(forged), chain=forged.chain_pem)
    refused_in_the_handshake(stack, channel, "CERTIFICATE_VERIFY_FAILED")


def test_the_gateways_own_certificate_is_not_an_envoy_identity(stack: LocalStack) -> None:
    """Right CA, wrong identity: the gateway's own Check port certificate, which the attacker
    holds, gets PERMISSION_DENIED as a gRPC status (it is not Envoy, so no Check denial)."""
    server = check_port_pki(stack.directory)[gateway_name()]
    channel = tls_channel(stack, key=server.key.read_bytes(), chain=server.cert.read_bytes())
    entries = audit_entries(stack)
    log = GatewayLog(stack)
    outcome = attempt_check(stack, channel, victim_check(stack))
    assert isinstance(outcome, grpc.aio.AioRpcError), outcome
    assert outcome.code() == grpc.StatusCode.PERMISSION_DENIED
    assert outcome.details() == (
        f"{spiffe_id(gateway_name())} is not an Envoy identity this gateway accepts Checks from"
    )
    assert audit_entries(stack) == entries
    assert "not in KEYMINT_CHECK_ALLOWED_CLIENTS" in log.wait_for("KEYMINT_CHECK_ALLOWED_CLIENTS")


def test_the_health_service_refuses_a_non_envoy_identity(stack: LocalStack) -> None:
    """Probing the port's health (is this replica up, is it keymint) follows the same rule."""
    server = check_port_pki(stack.directory)[gateway_name()]
    channel = tls_channel(stack, key=server.key.read_bytes(), chain=server.cert.read_bytes())

    async def probe() -> None:
        async with channel() as opened:
            await health_pb2_grpc.HealthStub(opened).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=5
            )

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        stack.background.run(probe())
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "is not an Envoy identity" in (refused.value.details() or "")


def test_reflection_refuses_a_non_envoy_identity(stack: LocalStack) -> None:
    """Listing the port's services (a streaming RPC) follows the same rule."""
    server = check_port_pki(stack.directory)[gateway_name()]
    channel = tls_channel(stack, key=server.key.read_bytes(), chain=server.cert.read_bytes())

    async def list_services() -> list[reflection_pb2.ServerReflectionResponse]:
        async with channel() as opened:
            stub = reflection_pb2_grpc.ServerReflectionStub(opened)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            return [r async for r in stub.ServerReflectionInfo(iter([request]), timeout=5)]

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        stack.background.run(list_services())
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "is not an Envoy identity" in (refused.value.details() or "")


def test_a_gateway_on_plaintext_tcp_without_the_dev_switch_refuses_to_start(
    stack: LocalStack,
) -> None:
    env = {
        key: value
        for key, value in {**os.environ, **stack.env}.items()
        if key not in CHECK_TLS_VARIABLES and key != "KEYMINT_DEV_INSECURE_CHECK_PORT"
    }
    env |= {
        "KEYMINT_GRPC_LISTEN": "127.0.0.1:0",
        "KEYMINT_SIGNERS": stack.gateway.env["KEYMINT_SIGNERS"],
        "PYTHONPATH": str(REPO),
    }
    result = subprocess.run(
        [sys.executable, "-m", "extauthz.cli", "serve"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        "extauthz serve: KEYMINT_GRPC_LISTEN: 127.0.0.1:0 is a TCP address, and a Check port "
        "without mTLS lets anyone who reaches it obtain tokens: set KEYMINT_CHECK_TLS_CERT, "
        "KEYMINT_CHECK_TLS_KEY, KEYMINT_CHECK_CLIENT_CA, KEYMINT_CHECK_ALLOWED_CLIENTS; or listen "
        "on unix:/path beside Envoy; or, for development only, set "
        "KEYMINT_DEV_INSECURE_CHECK_PORT=true "
        "(for example KEYMINT_GRPC_LISTEN=unix:/var/run/keymint/check.sock)\n"
    )


# --- positive controls ------------------------------------------------------------------------


def test_envoys_identity_gets_a_token_for_a_real_spiffe_caller(stack: LocalStack) -> None:
    entries = audit_entries(stack)
    outcome = attempt_check(
        stack,
        lambda: envoy_channel(stack.directory, address(stack)),
        victim_check(stack),
    )
    assert isinstance(outcome, CheckResponse), outcome
    assert outcome.status.code == 0, outcome.denied_response.body
    (header,) = [
        h.header.value for h in outcome.ok_response.headers if h.header.key == "authorization"
    ]
    claims = stack.decode(header.removeprefix("Bearer "), ORDERS)
    assert claims["sub"] == f"spiffe://prod.test{VICTIM}"
    assert audit_entries(stack) > entries


def test_through_envoy_a_real_spiffe_caller_gets_a_token(stack: LocalStack) -> None:
    svid = stack.svid("/ns/shop/sa/cart")
    reply = stack.front_call("GET", "/orders/v1/orders", certificate=svid)
    token = minted(reply)
    assert stack.decode(token, ORDERS)["sub"] == "spiffe://prod.test/ns/shop/sa/cart"
    assert jwt.get_unverified_header(token)["alg"] == "EdDSA"
