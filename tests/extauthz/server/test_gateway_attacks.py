"""Through the gateway's Check: every attack a JWT verifier must refuse is a 401 with its reason,
the caller's own keymint token passes through, XFCC is believed only from a trusted proxy, and
rate limits answer 429. One stack (real signers, local OIDC issuer) serves the whole table."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from extauthz.dev.calls import check_request
from extauthz.dev.github import REMOVE, SigningKey, compact_jws, hs256_signer, rs256_signer
from extauthz.dev.inprocess import Stack, running_stack
from extauthz.dev.settings import DEPLOY
from extauthz.server.decision import Allow
from tests.extauthz.server.test_gateway import denial, minted


def attacks(stack: Stack, attacker: SigningKey) -> dict[str, tuple[str, str]]:
    """name -> (bearer token, expected denial reason)."""
    issuer = stack.issuer
    now = int(time.time())
    public_pem = issuer.signing_key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = issuer.header()
    claims = issuer.claims()
    attacker_jwk = attacker.public_jwk()
    return {
        "alg_none": (compact_jws({**header, "alg": "none"}, claims, None), "alg_not_allowed"),
        "hs256_with_public_key": (
            compact_jws({**header, "alg": "HS256"}, claims, hs256_signer(public_pem)),
            "alg_not_allowed",
        ),
        "unknown_kid": (issuer.mint(key=SigningKey.generate("attacker")), "unknown_kid"),
        "embedded_jwk": (
            compact_jws(
                {**header, "jwk": attacker_jwk}, claims, rs256_signer(attacker.private_key)
            ),
            "bad_signature",
        ),
        "jku": (
            compact_jws(
                {**header, "jku": "http://127.0.0.1:1/jwks"},
                claims,
                rs256_signer(attacker.private_key),
            ),
            "bad_signature",
        ),
        "x5u": (
            compact_jws(
                {**header, "x5u": "http://127.0.0.1:1/cert"},
                claims,
                rs256_signer(attacker.private_key),
            ),
            "bad_signature",
        ),
        "expired": (issuer.mint({"exp": now - 3600, "iat": now - 3900}), "token_expired"),
        "not_yet_valid": (issuer.mint({"nbf": now + 3600}), "token_not_yet_valid"),
        "future_iat": (issuer.mint({"iat": now + 3600, "exp": now + 3900}), "iat_in_future"),
        "too_old": (issuer.mint({"iat": now - 3000, "exp": now + 600}), "token_too_old"),
        "wrong_iss": (issuer.mint({"iss": "https://evil.example"}), "unknown_issuer"),
        "wrong_aud": (issuer.mint({"aud": "https://someone-else"}), "bad_audience"),
        "default_aud": (issuer.mint({"aud": "https://github.com/octo-org"}), "bad_audience"),
        "bad_typ": (issuer.mint(header_overrides={"typ": "at+jwt"}), "bad_token_type"),
        "no_sub": (issuer.mint({"sub": REMOVE}), "missing_claim"),
        "oversized": (issuer.mint({"padding": "x" * 20_000}), "token_too_large"),
        "not_three_parts": ("abc.def", "malformed_token"),
        "bad_base64": ("!!!.@@@.###", "malformed_token"),
        "bad_json": (
            ".".join(base64.urlsafe_b64encode(p).decode().rstrip("=") for p in (b"{", b"}", b"x")),
            "malformed_token",
        ),
    }


def test_jwt_attacks_are_denied_with_their_reason(tmp_path: Path) -> None:
    attacker = SigningKey.generate("key-1")  # same kid as the issuer's key: only the key differs

    async def run() -> dict[str, Any]:
        outcomes = {}
        async with running_stack(tmp_path) as stack:
            for name, (token, reason) in attacks(stack, attacker).items():
                status, body, headers = denial(
                    await stack.check(check_request(bearer=token, route_key="deploy"))
                )
                outcomes[name] = (status, body["error"], reason, "www-authenticate" in headers)
        return outcomes

    outcomes = asyncio.run(run())
    wrong = {n: o for n, o in outcomes.items() if o[:2] != (401, o[2]) or not o[3]}
    assert not wrong, wrong


def test_own_tokens_pass_through_xfcc_trust_and_rate_limits(tmp_path: Path) -> None:
    async def run() -> None:
        overrides = {
            "KEYMINT_TRUSTED_PROXIES": "spiffe://prod.test/ns/edge/sa/proxy",
            "KEYMINT_RATE_PER_SECOND": "1",
            "KEYMINT_RATE_BURST": "5",
        }
        async with running_stack(tmp_path, **overrides) as stack:
            # /token's result, presented back on its own route, passes through unchanged.
            decision = await stack.gateway.pipeline.exchange(stack.issuer.mint(), DEPLOY, ())
            assert isinstance(decision, Allow)
            exchanged = decision.token.token
            response = await stack.check(check_request(bearer=exchanged, route_key="deploy"))
            assert minted(response) == exchanged
            status, body, _ = denial(
                await stack.check(check_request(bearer=exchanged, route_key="orders"))
            )
            assert (status, body["error"]) == (401, "bad_audience")
            head, claims, signature = exchanged.split(".")
            tampered = f"{head}.{claims}.{signature[:-4]}AAAA"
            status, body, _ = denial(
                await stack.check(check_request(bearer=tampered, route_key="deploy"))
            )
            assert status == 401

            # XFCC: believed from the trusted proxy, ignored from anyone else.
            svid = stack.svid("/ns/shop/sa/web")
            xfcc = {"x-forwarded-client-cert": xfcc_for(svid.pem)}
            trusted = check_request(
                route_key="orders",
                headers=xfcc,
                principal="spiffe://prod.test/ns/edge/sa/proxy",
            )
            claims = json.loads(base64_json(minted(await stack.check(trusted))))
            assert claims["sub"] == "spiffe://prod.test/ns/shop/sa/web"
            untrusted = check_request(
                route_key="orders", headers=xfcc, principal="spiffe://prod.test/ns/shop/sa/other"
            )
            status, body, _ = denial(await stack.check(untrusted))
            assert status == 401

            # One identity (a repository's workflow), a burst of 5 at 1/s: the sixth request
            # within the second is a 429, even with a fresh OIDC token for every step, as a CI
            # job fetches them: limits count per identity, not per credential.
            workflow = "octo-org/octo-repo/.github/workflows/rate.yml"
            statuses = []
            for step in range(8):
                token = stack.issuer.mint(
                    {
                        "jti": f"rate-limited-step-{step}",
                        "workflow_ref": f"{workflow}@refs/heads/main",
                    }
                )
                response = await stack.check(check_request(bearer=token, route_key="deploy"))
                statuses.append(
                    200 if response.status.code == 0 else response.denied_response.status.code
                )
            assert statuses[:5] == [200] * 5
            assert 429 in statuses[5:]

    asyncio.run(run())


def xfcc_for(pem: bytes) -> str:
    import urllib.parse

    return f'Cert="{urllib.parse.quote(pem.decode(), safe="")}"'


def base64_json(token: str) -> bytes:
    payload = token.split(".")[1]
    return base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
