"""The gateway end to end over gRPC: real signer processes, a local OIDC issuer, real certs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from envoy.service.auth.v3.external_auth_pb2 import CheckResponse

from extauthz.dev.calls import check_request
from extauthz.dev.inprocess import Stack, running_stack
from extauthz.dev.settings import DEPLOY, ISSUER, ORDERS, root_ca, valid_now
from extauthz.identity import github_subject


@pytest.fixture
def loop() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as runner:
        yield runner


def minted(response: CheckResponse) -> str:
    assert response.status.code == 0, response.denied_response.body
    headers = {h.header.key: h.header.value for h in response.ok_response.headers}
    assert headers["authorization"].startswith("Bearer ")
    return headers["authorization"][len("Bearer ") :]


def denial(response: CheckResponse) -> tuple[int, dict[str, object], dict[str, str]]:
    assert response.status.code != 0
    headers = {h.header.key: h.header.value for h in response.denied_response.headers}
    return response.denied_response.status.code, json.loads(response.denied_response.body), headers


def decode(stack: Stack, token: str, audience: str) -> dict[str, object]:
    key = Ed25519PublicKey.from_public_bytes(stack.gateway.group_public_key)
    claims: dict[str, object] = jwt.decode(
        token,
        key,
        algorithms=["EdDSA"],
        audience=audience,
        issuer=ISSUER,
        options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]},
    )
    return claims


def test_ci_token_and_svid_are_exchanged_and_denials_are_responses(
    tmp_path: Path, loop: asyncio.Runner
) -> None:
    async def run() -> None:
        async with running_stack(tmp_path) as stack:
            # A GitHub Actions job: its OIDC token becomes a deploy token.
            oidc = stack.issuer.mint()
            response = await stack.check(check_request(bearer=oidc, route_key="deploy"))
            claims = decode(stack, minted(response), DEPLOY)
            # The repository's ids under its issuer; the names stay as provenance claims.
            assert claims["sub"] == github_subject(stack.issuer.issuer, "65", "74")
            assert claims["repository"] == "octo-org/octo-repo"
            assert claims["repository_id"] == "74"
            assert claims["scope"] == "deploy:read deploy:write"
            assert "cnf" not in claims
            assert response.ok_response.headers_to_remove == ["x-forwarded-client-cert"]
            metadata = response.dynamic_metadata.fields["keymint"].struct_value.fields
            assert metadata["decision"].string_value == "allow"
            assert oidc not in str(response.dynamic_metadata)

            # Seen before: the same token comes back without another signature.
            again = await stack.check(check_request(bearer=oidc, route_key="deploy"))
            assert minted(again) == minted(response)

            # A workload with an X.509-SVID gets an orders token bound to its certificate.
            svid = stack.svid("/ns/shop/sa/web")
            response = await stack.check(check_request(certificate=svid, route_key="orders"))
            claims = decode(stack, minted(response), ORDERS)
            assert claims["sub"] == "spiffe://prod.test/ns/shop/sa/web"
            assert claims["cnf"] == {
                "x5t#S256": jwt.utils.base64url_encode(svid.der_sha256).decode()
            }

            # Denials: no credential (401), policy (403), each with a readable body.
            status, body, headers = denial(await stack.check(check_request(route_key="deploy")))
            assert status == 401
            assert body["error"] == "missing_credential"
            assert headers["www-authenticate"].startswith('Bearer realm="keymint"')
            status, body, _ = denial(
                await stack.check(check_request(certificate=svid, route_key="deploy"))
            )
            assert status == 403
            other_repo = stack.issuer.mint({"repository_id": "75"})
            status, body, _ = denial(
                await stack.check(check_request(bearer=other_repo, route_key="deploy"))
            )
            assert status == 403
            assert body["error"] == "no_matching_binding"

    loop.run(run())


@pytest.mark.parametrize(
    ("certificate_kind", "reason"),
    [
        ("expired", "cert_expired"),
        ("wrong_ca", "chain_untrusted"),
        ("wrong_trust_domain", "wrong_trust_domain"),
    ],
)
def test_bad_client_certificates_are_refused(
    tmp_path: Path, loop: asyncio.Runner, certificate_kind: str, reason: str
) -> None:
    async def run() -> None:
        async with running_stack(tmp_path) as stack:
            now = datetime.now(UTC)
            if certificate_kind == "expired":
                cert = stack.ca.issue_svid(
                    "spiffe://prod.test/ns/shop/sa/web",
                    not_before=now - timedelta(days=2),
                    not_after=now - timedelta(days=1),
                )
            elif certificate_kind == "wrong_ca":
                cert = root_ca("prod.test").issue_svid(
                    "spiffe://prod.test/ns/shop/sa/web", **valid_now()
                )
            else:
                cert = root_ca("evil.test").issue_svid(
                    "spiffe://evil.test/ns/shop/sa/web", **valid_now()
                )
            status, body, _ = denial(
                await stack.check(check_request(certificate=cert, route_key="orders"))
            )
            assert status == 401
            assert body["error"] == reason

    loop.run(run())


def test_fewer_than_t_signers_is_a_503(tmp_path: Path, loop: asyncio.Runner) -> None:
    async def run() -> None:
        async with running_stack(tmp_path) as stack:
            stack.cluster.signers[1].kill()
            stack.cluster.signers[2].kill()
            response = await stack.check(
                check_request(bearer=stack.issuer.mint(), route_key="deploy")
            )
            status, body, headers = denial(response)
            assert status == 503
            assert body == {
                "error": "no_signing_quorum",
                "detail": "no signing quorum",
                "status": 503,
            }
            assert "retry-after" in headers
            # Which signers failed and where is for the operator: the audit record has it.
            for signer in stack.cluster.signers.values():
                assert signer.address not in str(response)
            records = Path(stack.env["KEYMINT_AUDIT_LOG"]).read_text().splitlines()
            (denied,) = [json.loads(r)["data"] for r in records if '"no_signing_quorum"' in r]
            assert "signer 1: " in denied["internal"]
            assert "signer 2: " in denied["internal"]
            assert "signer" not in str(response.denied_response)

    loop.run(run())
