"""What the local stack's callers send: a CheckRequest as Envoy builds it, a channel to the
gateway's Check port as Envoy opens it, and an RFC 8693 exchange form."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from pathlib import Path

import grpc
from envoy.config.core.v3.address_pb2 import Address, SocketAddress
from envoy.service.auth.v3.attribute_context_pb2 import AttributeContext
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest

from extauthz.dev.certs import IssuedCertificate
from extauthz.dev.settings import DEPLOY, check_port_pki
from extauthz.server.token_exchange import GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE_ID_TOKEN
from signer.devca import dns_name, envoy_name, gateway_name


def check_request(
    *,
    bearer: str | None = None,
    certificate: IssuedCertificate | None = None,
    route_key: str = "deploy",
    host: str = "api.internal",
    path: str = "/v1/things",
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    principal: str = "",
) -> CheckRequest:
    all_headers = dict(headers or {})
    if bearer is not None:
        all_headers["authorization"] = f"Bearer {bearer}"
    source = AttributeContext.Peer(
        address=Address(socket_address=SocketAddress(address="127.0.0.1", port_value=40000)),
        principal=principal,
    )
    if certificate is not None:
        source.certificate = urllib.parse.quote(certificate.pem.decode(), safe="")
    return CheckRequest(
        attributes=AttributeContext(
            source=source,
            request=AttributeContext.Request(
                http=AttributeContext.HttpRequest(
                    method=method, host=host, path=path, headers=all_headers, protocol="HTTP/1.1"
                )
            ),
            context_extensions={"route": route_key},
        )
    )


def envoy_channel(directory: Path, address: str) -> grpc.aio.Channel:
    """A channel to the gateway's Check port as Envoy: its client certificate, the gateway's
    server certificate checked against the Check port's CA."""
    ca, cert, key = check_port_pki(directory)[envoy_name()].read()
    credentials = grpc.ssl_channel_credentials(ca, key, cert)
    override = [("grpc.ssl_target_name_override", dns_name(gateway_name()))]
    return grpc.aio.secure_channel(address, credentials, options=override)


def exchange_form(subject_token: str, audience: str = DEPLOY) -> dict[str, str]:
    """A token-exchange request (RFC 8693) for `subject_token`, an OIDC ID token."""
    return {
        "grant_type": GRANT_TYPE_TOKEN_EXCHANGE,
        "subject_token": subject_token,
        "subject_token_type": TOKEN_TYPE_ID_TOKEN,
        "audience": audience,
    }
