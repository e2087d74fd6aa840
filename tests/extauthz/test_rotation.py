"""Key rotation without downtime: a DKG among the same signers adds a key, the signers endorse it
with the active key, it is published before it signs, tokens of the old key keep verifying until
they expire, and traffic never fails meanwhile."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

import aiohttp
import jwt

from extauthz.dev.calls import check_request
from extauthz.dev.inprocess import Stack, running_stack
from extauthz.dev.settings import DEPLOY, ISSUER
from extauthz.server.http_edge import start_http
from extauthz.server.keyring import load_trust_root
from signer.ceremony.driver import connect
from signer.endorsement import verify_chain
from signer.token import kid_for
from tests.extauthz.server.test_gateway import minted


async def jwks(port: int) -> dict[str, object]:
    return await document(port, "/.well-known/jwks.json")


async def endorsements(port: int) -> dict[str, object]:
    return await document(port, "/.well-known/keymint-endorsements.json")


async def document(port: int, path: str) -> dict[str, object]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}") as reply,
    ):
        body: dict[str, object] = await reply.json()
        return body


def verify(token: str, document: dict[str, object]) -> dict[str, object]:
    kid = jwt.get_unverified_header(token)["kid"]
    keys = [k for k in document["keys"] if k["kid"] == kid]  # type: ignore[attr-defined, index]
    assert keys, f"kid {kid} is not published"
    claims: dict[str, object] = jwt.decode(
        token, jwt.PyJWK(keys[0]), algorithms=["EdDSA"], audience=DEPLOY, issuer=ISSUER
    )
    return claims


ADMIN_TOKEN = "rotation-admin-token"


async def admin_post(port: int, step: str, document: object) -> tuple[int, dict[str, object]]:
    url = f"http://127.0.0.1:{port}/admin/keys/{step}"
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, json=document, headers=headers) as reply,
    ):
        body: dict[str, object] = await reply.json()
        return reply.status, body


async def traffic(stack: Stack, stop: asyncio.Event, failures: list[str], kids: list[str]) -> None:
    """A new CI credential every 20 ms: every one of them is a fresh mint."""
    n = 0
    while not stop.is_set():
        n += 1
        token = stack.issuer.mint({"jti": f"job-{n}"})
        response = await stack.check(check_request(bearer=token, route_key="deploy"))
        if response.status.code != 0:
            failures.append(response.denied_response.body)
        else:
            kids.append(jwt.get_unverified_header(minted(response))["kid"])
        await asyncio.sleep(0.02)


def test_rotation_publishes_first_and_never_drops_a_request(tmp_path: Path) -> None:
    async def run() -> None:
        lead = "1.0"
        admin = {
            "KEYMINT_KEY_PUBLISH_LEAD_SECONDS": lead,
            "KEYMINT_ADMIN_TOKEN_SHA256": hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest(),
        }
        async with running_stack(tmp_path, **admin) as stack:
            runner, port = await start_http(stack.gateway, "127.0.0.1:0")
            old_key = stack.gateway.group_public_key
            root = load_trust_root(Path(stack.env["KEYMINT_TRUST_ROOT"]), ISSUER)
            before = minted(
                await stack.check(check_request(bearer=stack.issuer.mint(), route_key="deploy"))
            )
            assert len((await jwks(port))["keys"]) == 1  # type: ignore[arg-type]

            # The old form (a new signer group by address) is gone: a rotation stays among the
            # same signers, and a kid they do not hold is refused before any signer is asked.
            status, body = await admin_post(port, "publish", {"signers": {"1": "10.0.0.9:1"}})
            assert (status, body["error"]) == (400, "invalid_request")
            status, body = await admin_post(port, "publish", {"kid": "not-a-held-kid"})
            assert (status, body["error"]) == (409, "rotation_refused")
            assert "no key not-a-held-kid is held by t signers that agree" in str(
                body["error_description"]
            )

            stop, failures, kids = asyncio.Event(), [], []
            load = asyncio.create_task(traffic(stack, stop, failures, kids))
            try:
                # Operators: a DKG among the SAME signers adds a key beside the active one.
                async with connect(
                    stack.cluster.addresses([1, 2, 3]), tls_files=stack.cluster.operator_tls
                ) as driver:
                    new_key = (await driver.dkg(2)).group_public_key

                status, body = await admin_post(port, "publish", {"kid": kid_for(new_key)})
                assert status == 200, body
                assert body["published"] == kid_for(new_key)
                status, body = await admin_post(port, "activate", {})
                assert status == 409  # too soon: verifiers may not have the new key yet
                assert "wait" in str(body["error_description"])
                published = await jwks(port)
                assert {k["kid"] for k in published["keys"]} == {  # type: ignore[attr-defined, index]
                    kid_for(old_key),
                    kid_for(new_key),
                }
                # Whoever pins the root trusts the new key through the signers' endorsement.
                chain = await endorsements(port)
                trusted = verify_chain(root, chain["endorsements"])  # type: ignore[arg-type]
                assert trusted == [old_key, new_key]
                await asyncio.sleep(0.3)
                assert set(kids) == {kid_for(old_key)}  # published, not yet used

                await asyncio.sleep(float(lead))
                status, body = await admin_post(port, "activate", {})
                assert (status, body["active"]) == (200, kid_for(new_key))
                await asyncio.sleep(0.2)  # a mint begun under the old key may still complete
                kids.clear()
                await asyncio.sleep(0.5)
                assert set(kids) == {kid_for(new_key)}

                # The old key's token still verifies: its key stays published.
                document = await jwks(port)
                assert verify(before, document)["sub"]
                after = minted(
                    await stack.check(
                        check_request(bearer=stack.issuer.mint({"jti": "x"}), route_key="deploy")
                    )
                )
                assert verify(after, document)["sub"]

                # Once the last old token has expired, the old key leaves the JWKS.
                keyring = stack.gateway.keyring.ring
                keyring._clock = lambda: time.time() + 3600
                assert [kid_for(k) for k in await keyring.prune()] == [kid_for(old_key)]
                assert [k["kid"] for k in (await jwks(port))["keys"]] == [kid_for(new_key)]  # type: ignore[attr-defined, index]
            finally:
                stop.set()
                await load
                await runner.cleanup()
            assert failures == []
            assert len(kids) > 10

    asyncio.run(run())
