"""Key rotation through the whole stack, step by step as envoy/README.md gives it, while traffic
keeps flowing through the front Envoy: a DKG adds a key among the same signers, the gateway has it
endorsed and publishes it, `extauthz pin-keys` pins it for the jwt_authn Envoy, which is hot
restarted, and only then is it activated; the jwt_authn Envoy accepts old and new tokens alike."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import urllib.request
from collections.abc import Iterator

import jwt
import pytest

from extauthz.dev.stack import LocalStack, local_stack
from signer.ceremony.driver import connect
from signer.token import kid_for
from tests.e2e.replies import bearer, minted

ADMIN_TOKEN = "e2e-rotation-admin"
LEAD_SECONDS = 3  # publish lead: time for every verifier to pin the new key


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    extra = {
        "KEYMINT_ADMIN_TOKEN_SHA256": hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest(),
        "KEYMINT_KEY_PUBLISH_LEAD_SECONDS": str(LEAD_SECONDS),
    }
    directory = tmp_path_factory.mktemp("rotation")
    with local_stack(directory, extra_env=extra) as running:
        yield running


def admin(stack: LocalStack, step: str, document: object) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{stack.gateway.http_port}/admin/keys/{step}",
        data=json.dumps(document).encode(),
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_rotation_under_traffic_through_envoy(stack: LocalStack) -> None:
    old_kid = stack.jwks()["keys"][0]["kid"]
    old_token = minted(
        stack.front_call("GET", "/deploy/v1/releases", headers=bearer(stack.oidc_token()))
    )
    failures: list[str] = []
    kids: list[str] = []
    stop = threading.Event()

    def traffic() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            token = stack.oidc_token(jti=f"rotation-{n}")  # a new credential: a fresh mint
            reply = stack.front_call("GET", "/deploy/v1/releases", headers=bearer(token))
            if reply.status != 200:
                failures.append(f"{reply.status} {reply.body!r}")
            else:
                kids.append(jwt.get_unverified_header(minted(reply))["kid"])
            time.sleep(0.05)

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        # 1. Operators: a DKG among the same signers adds a key beside the active one.
        async def dkg() -> bytes:
            addresses = stack.cluster.addresses([1, 2, 3])
            async with connect(addresses, tls_files=stack.cluster.operator_tls) as driver:
                return (await driver.dkg(2)).group_public_key

        new_kid = kid_for(stack.background.run(dkg(), timeout=60))

        # 2. Publish: the signers endorse it with the active key; only then is it served.
        status, body = admin(stack, "publish", {"kid": new_kid})
        assert (status, body["published"]) == (200, new_kid), body
        assert {k["kid"] for k in stack.jwks()["keys"]} == {old_kid, new_kid}
        assert admin(stack, "activate", {})[0] == 409  # too early: verifiers may lack the key

        # 3. Every upstream pins it (pin-keys walks the chain from the root) and hot restarts.
        assert stack.jwt_call("/deploy/v1/releases", bearer=old_token).status == 200
        printed = stack.pin_keys()
        assert f"pinned 2 key(s) to {stack.pinned_jwks}: " in printed
        assert {k["kid"] for k in json.loads(stack.pinned_jwks.read_text())["keys"]} == {
            old_kid,
            new_kid,
        }
        stack.reload_jwt_envoy()

        # 4. Activate once the lead has passed.
        time.sleep(LEAD_SECONDS + 0.5)
        status, body = admin(stack, "activate", {})
        assert (status, body["active"]) == (200, new_kid), body
        time.sleep(0.5)
        kids_after = len(kids)
        time.sleep(1.5)
        assert set(kids[kids_after:]) == {new_kid}

        # The API behind jwt_authn accepts both the old key's token and the new key's.
        new_token = minted(
            stack.front_call(
                "GET", "/deploy/v1/releases", headers=bearer(stack.oidc_token(jti="after"))
            )
        )
        assert jwt.get_unverified_header(new_token)["kid"] == new_kid
        assert stack.jwt_call("/deploy/v1/releases", bearer=new_token).status == 200
        assert stack.jwt_call("/deploy/v1/releases", bearer=old_token).status == 200
        assert {k["kid"] for k in stack.jwks()["keys"]} == {old_kid, new_kid}
    finally:
        stop.set()
        worker.join()
    assert failures == []
    assert old_kid in kids
    assert new_kid in kids
