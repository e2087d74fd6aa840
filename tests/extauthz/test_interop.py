"""A minted token verifies against the served JWKS with PyJWT, and with Node's jose (panva/jose),
an independent implementation, fed the same JWKS document."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import aiohttp
import jwt

from extauthz.dev.calls import check_request
from extauthz.dev.inprocess import running_stack
from extauthz.dev.settings import DEPLOY, ISSUER
from extauthz.server.http_edge import start_http

INTEROP = Path(__file__).resolve().parents[1] / "interop"


def jose_verify(jwks: dict[str, object], token: str, audience: str) -> dict[str, object]:
    node = shutil.which("node")
    assert node is not None, "Node.js is required for the interop test (make setup installs jose)"
    result = subprocess.run(
        [node, str(INTEROP / "verify.mjs"), ISSUER, audience],
        input=json.dumps({"jwks": jwks, "token": token}),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    verdict: dict[str, object] = json.loads(result.stdout)
    return verdict


def test_minted_token_verifies_with_pyjwt_and_node_jose(tmp_path: Path) -> None:
    async def run() -> tuple[dict[str, object], str]:
        async with running_stack(tmp_path) as stack:
            runner, port = await start_http(stack.gateway, "127.0.0.1:0")
            try:
                response = await stack.check(
                    check_request(bearer=stack.issuer.mint(), route_key="deploy")
                )
                assert response.status.code == 0
                header = response.ok_response.headers[0].header
                token = header.value.removeprefix("Bearer ")
                async with aiohttp.ClientSession() as session:
                    url = f"http://127.0.0.1:{port}/.well-known/jwks.json"
                    async with session.get(url) as reply:
                        jwks = await reply.json()
            finally:
                await runner.cleanup()
            return jwks, token

    jwks, token = asyncio.run(run())
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(jwt.PyJWK(k) for k in jwks["keys"] if k["kid"] == kid)  # type: ignore[index]
    claims = jwt.decode(token, key, algorithms=["EdDSA"], audience=DEPLOY, issuer=ISSUER)
    assert claims["repository_id"] == "74"

    verdict = jose_verify(jwks, token, DEPLOY)
    assert verdict["ok"] is True, verdict
    assert verdict["claims"] == claims  # type: ignore[comparison-overlap]
    assert verdict["header"] == {"alg": "EdDSA", "kid": kid, "typ": "at+jwt"}

    head, body, signature = token.split(".")
    tampered = f"{head}.{body}.{signature[:-4]}AAAA"
    assert jose_verify(jwks, tampered, DEPLOY)["ok"] is False
    assert jose_verify(jwks, token, "https://someone-else")["ok"] is False
