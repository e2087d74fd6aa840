"""envoy/envoy.yaml served by a real Envoy, with a scripted authorizer in keymint's place.

The e2e tests run the real gateway; here the authorizer is a fake that records every CheckRequest
and answers as each test needs, so the Envoy side of the contract is checked on its own: what
Envoy sends (the route key, the verified certificate, its own XFCC and never the client's) and what
it does with the answers (apply keymint's OK, refuse a header keymint may not set, fail closed
when the authorizer is slow).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from envoy.config.core.v3.base_pb2 import HeaderValue, HeaderValueOption
from envoy.service.auth.v3 import external_auth_pb2_grpc
from envoy.service.auth.v3.external_auth_pb2 import (
    CheckRequest,
    CheckResponse,
    DeniedHttpResponse,
    OkHttpResponse,
)
from envoy.type.v3.http_status_pb2 import HttpStatus
from google.rpc import code_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from extauthz.dev.envoy import (
    FRONT_HOSTNAME,
    FRONT_LISTENER,
    EnvoyProcess,
    front_envoy,
    write_tls,
)
from extauthz.dev.servers import BackgroundLoop, EchoUpstream, Reply, request
from extauthz.dev.settings import check_port_pki, root_ca, valid_now
from extauthz.server.grpc_edge import SERVICE
from signer.devca import dns_name, envoy_name, gateway_name, spiffe_id
from signer.tls import server_credentials
from tests.helpers.certs import CertificateAuthority, IssuedCertificate, pem

MINTED = "Bearer minted-by-the-fake-authorizer"
SPOOFED_XFCC = "By=spiffe://prod.test/ns/edge/sa/envoy;URI=spiffe://prod.test/ns/shop/sa/admin"
TEST_ID = "x-test-id"
CLOSED_PORT = 1
_OVERWRITE = HeaderValueOption.HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD


def _header(key: str, value: str) -> HeaderValueOption:
    return HeaderValueOption(header=HeaderValue(key=key, value=value), append_action=_OVERWRITE)


class FakeAuthorizer(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    """Answers by path: /orders/evil sets a header keymint may not, /orders/slow outlasts Envoy's
    timeout, /orders/deny denies; anything else is an OK shaped like keymint's."""

    def __init__(self) -> None:
        self.seen: dict[str, CheckRequest] = {}

    async def Check(
        self, request: CheckRequest, context: grpc.aio.ServicerContext
    ) -> CheckResponse:
        http = request.attributes.request.http
        self.seen[http.headers.get(TEST_ID, "")] = request
        if http.path.startswith("/orders/slow"):
            await asyncio.sleep(5)
        if http.path.startswith("/orders/deny"):
            body = json.dumps({"error": "no_matching_binding", "detail": "no", "status": 403})
            return CheckResponse(
                status=status_pb2.Status(code=code_pb2.PERMISSION_DENIED),
                denied_response=DeniedHttpResponse(
                    status=HttpStatus(code=403),
                    headers=[_header("content-type", "application/json")],
                    body=body,
                ),
            )
        headers = [_header("authorization", MINTED)]
        if http.path.startswith("/orders/evil"):
            headers.append(_header("x-user", "admin"))
        return CheckResponse(
            status=status_pb2.Status(code=code_pb2.OK),
            ok_response=OkHttpResponse(
                headers=headers, headers_to_remove=["x-forwarded-client-cert"]
            ),
        )


@dataclass
class Front:
    background: BackgroundLoop
    authorizer: FakeAuthorizer
    envoy: EnvoyProcess
    edge_ca: Path
    ca: CertificateAuthority
    directory: Path
    files: dict[int, tuple[Path, Path]] = field(default_factory=dict)

    def call(
        self,
        path: str,
        *,
        certificate: IssuedCertificate | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[Reply, CheckRequest | None]:
        """GET `path` over TLS (mTLS with `certificate`); the reply and the Check it caused."""
        test_id = str(uuid.uuid4())
        context = ssl.create_default_context(cafile=str(self.edge_ca))
        if certificate is not None:
            serial = certificate.certificate.serial_number
            if serial not in self.files:
                self.files[serial] = write_tls(self.directory, f"client-{serial:x}", certificate)
            cert, key = self.files[serial]
            context.load_cert_chain(str(cert), str(key))
        url = f"https://127.0.0.1:{self.envoy.port(FRONT_LISTENER)}{path}"
        all_headers = {**(headers or {}), TEST_ID: test_id}
        reply = self.background.run(request("GET", url, all_headers, None, context, FRONT_HOSTNAME))
        return reply, self.authorizer.seen.get(test_id)

    def svid(self, path: str) -> IssuedCertificate:
        return self.ca.issue_svid(f"spiffe://prod.test{path}", **valid_now())


async def _start_authorizer(
    authorizer: FakeAuthorizer, directory: Path
) -> tuple[grpc.aio.Server, int]:
    """The fake in the gateway's place, on an mTLS port like the gateway's (its certificate)."""
    server = grpc.aio.server()
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(authorizer, server)
    checks = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    await checks.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
    port = server.add_secure_port(
        "127.0.0.1:0", server_credentials(check_port_pki(directory)[gateway_name()])
    )
    await server.start()
    return server, port


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    directory = tmp_path_factory.mktemp("front-live")
    with contextlib.ExitStack() as stack:
        background = BackgroundLoop()
        stack.callback(background.close)
        echo = EchoUpstream()
        background.run(echo.start())
        stack.callback(lambda: background.run(echo.stop()))
        authorizer = FakeAuthorizer()
        server, grpc_port = background.run(_start_authorizer(authorizer, directory))
        stack.callback(lambda: background.run(server.stop(None)))

        ca = root_ca("prod.test")
        (directory / "trust-bundle.pem").write_bytes(pem(ca.certificate))
        envoy, edge_ca = front_envoy(
            directory, grpc_port=grpc_port, http_port=CLOSED_PORT, upstream_port=echo.port
        )
        stack.callback(envoy.stop)
        envoy.start()
        yield Front(background, authorizer, envoy, edge_ca, ca, directory)


def test_ok_replaces_the_callers_credentials(front: Front) -> None:
    svid = front.svid("/ns/shop/sa/web")
    reply, check = front.call(
        "/orders/v1/orders",
        certificate=svid,
        headers={"authorization": "Basic dXNlcjpwYXNz", "x-forwarded-client-cert": SPOOFED_XFCC},
    )
    assert reply.status == 200, reply.body
    received = reply.echoed()
    assert received["authorization"] == [MINTED]
    assert "x-forwarded-client-cert" not in received
    assert check is not None
    # What the authorizer was told: the route key, and the certificate Envoy verified, as PEM.
    assert dict(check.attributes.context_extensions) == {"route": "orders"}
    presented = urllib.parse.unquote(check.attributes.source.certificate).encode()
    assert presented == svid.pem
    # The XFCC the authorizer saw is Envoy's own for this connection (SANITIZE_SET), never the
    # client's: the verified certificate's hash and SPIFFE ID.
    xfcc = check.attributes.request.http.headers["x-forwarded-client-cert"]
    assert "sa/admin" not in xfcc
    assert "URI=spiffe://prod.test/ns/shop/sa/web" in xfcc
    assert f"Hash={svid.der_sha256.hex()}" in xfcc


def test_only_the_leaf_of_a_presented_chain_reaches_the_authorizer(front: Front) -> None:
    """A workload whose SVID comes from an intermediate CA presents leaf and intermediate; Envoy
    verifies the chain but forwards the leaf alone, so keymint's bundle must hold the
    intermediate (envoy/README.md, include_peer_certificate)."""
    intermediate = front.ca.intermediate(**valid_now())
    svid = intermediate.issue_svid("spiffe://prod.test/ns/shop/sa/web", **valid_now())
    reply, check = front.call("/orders/v1/orders", certificate=svid)
    assert reply.status == 200, reply.body
    assert check is not None
    assert urllib.parse.unquote(check.attributes.source.certificate).encode() == svid.pem


def test_a_spoofed_xfcc_without_a_certificate_never_reaches_the_authorizer(front: Front) -> None:
    reply, check = front.call(
        "/deploy/v1/releases", headers={"x-forwarded-client-cert": SPOOFED_XFCC}
    )
    assert reply.status == 200
    assert check is not None
    assert "x-forwarded-client-cert" not in check.attributes.request.http.headers
    assert check.attributes.source.certificate == ""
    assert dict(check.attributes.context_extensions) == {"route": "deploy"}


def test_a_denial_is_returned_as_the_authorizer_wrote_it(front: Front) -> None:
    reply, _ = front.call("/orders/deny")
    assert reply.status == 403
    assert reply.json() == {"error": "no_matching_binding", "detail": "no", "status": 403}


def test_the_authorizer_may_set_authorization_and_nothing_else(front: Front) -> None:
    reply, check = front.call("/orders/evil")
    assert check is not None
    assert reply.status == 500
    assert reply.json()["error"] == "authorization_invalid"
    assert "headers" not in reply.json()  # nothing reached the upstream


def test_a_slow_authorizer_is_a_503_never_a_pass(front: Front) -> None:
    reply, check = front.call("/orders/slow")
    assert check is not None
    assert reply.status == 503
    assert reply.headers["retry-after"] == "1"
    assert reply.json() == {
        "error": "authorization_unavailable",
        "detail": "the authorization service is unavailable; retry later",
        "status": 503,
    }


@pytest.mark.parametrize(
    ("path", "status", "error"),
    [
        # keymint's HTTP edge is not running here: its routes answer Envoy's JSON 503.
        ("/token", 503, "temporarily_unavailable"),
        ("/.well-known/jwks.json", 503, "temporarily_unavailable"),
        ("/metrics", 404, "not_found"),
        ("/nowhere", 404, "not_found"),
    ],
)
def test_keymints_own_routes_and_unknown_paths_skip_the_authorizer(
    front: Front, path: str, status: int, error: str
) -> None:
    reply, check = front.call(path)
    assert check is None
    assert (reply.status, reply.json()["error"]) == (status, error)


# --- whom Envoy asks: only the gateway's certificate ------------------------------------------


async def _start_impostor(
    authorizer: FakeAuthorizer, key: bytes, chain: bytes
) -> tuple[grpc.aio.Server, int]:
    """An authorizer that answers every Check with OK, on TLS with the given certificate; it
    asks Envoy for no client certificate, so only Envoy's own check of it stands in the way."""
    server = grpc.aio.server()
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(authorizer, server)
    checks = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    await checks.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key, chain)]))
    await server.start()
    return server, port


def _key_pem(issued: IssuedCertificate) -> bytes:
    return issued.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.mark.parametrize("impostor", ["right-ca-wrong-identity", "right-identity-other-ca"])
def test_envoy_sends_no_check_to_a_server_without_the_gateways_certificate(
    tmp_path: Path, impostor: str
) -> None:
    """Whoever takes the gateway's address would receive every caller's credentials in its
    Checks, and could answer OK: Envoy's upstream TLS context refuses a server certificate that
    does not chain to GATEWAY_CA_BUNDLE or lacks GATEWAY_SPIFFE_ID, and fails closed."""
    if impostor == "right-ca-wrong-identity":  # Envoy's own certificate: the Check port's CA
        envoy = check_port_pki(tmp_path)[envoy_name()]
        key, chain = envoy.key.read_bytes(), envoy.cert.read_bytes()
    else:  # the gateway's SPIFFE ID, from a CA of the impostor's own
        forged = root_ca("keymint.internal").issue(
            uris=[spiffe_id(gateway_name())], dns_names=[dns_name(gateway_name())], **valid_now()
        )
        key, chain = _key_pem(forged), forged.chain_pem
    with contextlib.ExitStack() as stack:
        background = BackgroundLoop()
        stack.callback(background.close)
        authorizer = FakeAuthorizer()
        server, port = background.run(_start_impostor(authorizer, key, chain))
        stack.callback(lambda: background.run(server.stop(None)))
        (tmp_path / "trust-bundle.pem").write_bytes(pem(root_ca("prod.test").certificate))
        envoy, edge_ca = front_envoy(
            tmp_path, grpc_port=port, http_port=CLOSED_PORT, upstream_port=CLOSED_PORT
        )
        stack.callback(envoy.stop)
        envoy.start()
        context = ssl.create_default_context(cafile=str(edge_ca))
        url = f"https://127.0.0.1:{envoy.port(FRONT_LISTENER)}/orders/v1/orders"
        headers = {"authorization": "Bearer a-callers-credential"}
        reply = background.run(request("GET", url, headers, None, context, FRONT_HOSTNAME))
        assert reply.status == 503
        assert reply.json()["error"] == "authorization_unavailable"
        assert authorizer.seen == {}  # no Check, so no caller credential, ever reached it
        # Envoy's own count of why: the SAN matcher, or the chain.
        reason = "fail_verify_san" if impostor == "right-ca-wrong-identity" else "fail_verify_error"
        assert envoy.counter(f"cluster.keymint_grpc.ssl.{reason}") > 0
