"""Interop with npm `openid-client` v6 (panva), an independent OAuth client, next to the jose
tests: it discovers keymint (OIDC Discovery and RFC 8414), runs the token-exchange grant as a
public client against the real stack, and jose verifies the result against the discovered
`jwks_uri`."""

from __future__ import annotations

import json
import logging
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from extauthz.dev.inprocess import Stack, running_stack
from extauthz.dev.servers import BackgroundLoop
from extauthz.dev.settings import DEPLOY, ORDERS
from extauthz.server.http_edge import start_http
from extauthz.server.token_exchange import TOKEN_TYPE_JWT

INTEROP = Path(__file__).resolve().parents[1] / "interop"
CLIENT_ID = "keymint-interop"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def openid_client(issuer: str, request: dict[str, str], discovery: str) -> dict[str, Any]:
    node = shutil.which("node")
    assert node is not None, "Node.js is required for the interop test (make setup installs it)"
    assert (INTEROP / "node_modules" / "openid-client").is_dir(), "run: make setup (npm ci)"
    result = subprocess.run(
        [node, str(INTEROP / "exchange.mjs"), issuer, CLIENT_ID, discovery],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    verdict: dict[str, Any] = json.loads(result.stdout)
    return verdict


@pytest.fixture(scope="module")
def keymint(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, Stack, BackgroundLoop]]:
    """The stack with its HTTP edge on a port chosen first, so that the issuer is its URL."""
    directory = tmp_path_factory.mktemp("openid-client")
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    loop = BackgroundLoop()
    context = running_stack(directory, KEYMINT_ISSUER=issuer)
    try:
        stack = loop.run(context.__aenter__(), timeout=120)
        runner, _ = loop.run(start_http(stack.gateway, f"127.0.0.1:{port}"))
        yield issuer, stack, loop
        loop.run(runner.cleanup())
        loop.run(context.__aexit__(None, None, None), timeout=60)
    finally:
        loop.close()


@pytest.mark.parametrize("discovery", ["oidc", "oauth2"])
def test_discovery_exchange_as_a_public_client_and_jose_verification(
    keymint: tuple[str, Stack, BackgroundLoop], discovery: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    issuer, stack, _ = keymint
    subject = stack.issuer.mint({"jti": f"openid-client-{discovery}"})
    request = {
        "subject_token": subject,
        "subject_token_type": TOKEN_TYPE_JWT,
        "audience": DEPLOY,
        "scope": "deploy:read",
    }
    verdict = openid_client(issuer, request, discovery)
    assert verdict["ok"] is True, verdict
    metadata = verdict["metadata"]
    assert metadata["issuer"] == issuer
    assert metadata["token_endpoint"] == f"{issuer}/token"
    assert metadata["jwks_uri"] == f"{issuer}/.well-known/jwks.json"
    assert "urn:ietf:params:oauth:grant-type:token-exchange" in metadata["grant_types_supported"]
    assert metadata["token_endpoint_auth_methods_supported"] == ["none"]
    response = verdict["response"]
    assert response["token_type"] == "bearer"  # openid-client normalises the case
    assert response["issued_token_type"] == TOKEN_TYPE_JWT
    assert response["scope"] == "deploy:read"
    assert 0 < response["expires_in"] <= 600
    assert verdict["header"]["alg"] == "EdDSA"
    claims = verdict["claims"]
    assert claims["iss"] == issuer
    assert claims["aud"] == DEPLOY
    assert claims["scope"] == "deploy:read"
    assert claims["repository_id"] == "74"
    assert claims["sub"] == f"{stack.issuer.issuer}#repository_owner_id=65&repository_id=74"
    # Which document openid-client read: OIDC Discovery's, or RFC 8414's.
    document = {
        "oidc": "/.well-known/openid-configuration",
        "oauth2": "/.well-known/oauth-authorization-server",
    }[discovery]
    served = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert any(f"GET {document} 200" in line for line in served), served
    assert any("GET /.well-known/jwks.json 200" in line for line in served), served


def test_a_refused_exchange_reads_as_an_oauth_error_in_openid_client(
    keymint: tuple[str, Stack, BackgroundLoop],
) -> None:
    issuer, stack, _ = keymint
    request = {
        "subject_token": stack.issuer.mint({"jti": "openid-client-refused"}),
        "subject_token_type": TOKEN_TYPE_JWT,
        "audience": ORDERS,  # the CI job's binding allows the deploy audience only
    }
    verdict = openid_client(issuer, request, "oidc")
    assert verdict["ok"] is False
    assert verdict["stage"] == "exchange"
    assert verdict["error"] == "invalid_target"
    assert verdict["error_description"].startswith("audience_not_allowed")
    assert verdict["status"] == 400


def test_the_http_edge_answers_on_the_issuer_it_names(
    keymint: tuple[str, Stack, BackgroundLoop],
) -> None:
    """openid-client compares the discovered issuer with the URL it asked: a gateway configured
    with another issuer is refused at discovery."""
    issuer, _, _ = keymint
    other = issuer.replace("127.0.0.1", "localhost")
    verdict = openid_client(other, {"subject_token": "x"}, "oidc")
    assert verdict["ok"] is False
    assert verdict["stage"] == "discovery"
    assert "issuer does not match" in verdict["message"]
