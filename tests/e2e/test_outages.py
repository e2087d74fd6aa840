"""Failures behind the front Envoy: each is a 503 with a JSON body and Retry-After, never a pass.

These tests break their stack (this module has its own): first two of the three signers die,
then the gateway itself. They run in file order, the signer test while the gateway is alive.
"""

from __future__ import annotations

import uuid

from extauthz.dev.calls import exchange_form
from extauthz.dev.servers import Reply
from extauthz.dev.stack import LocalStack
from tests.e2e.replies import bearer, denial, minted


def unavailable(reply: Reply, error: str) -> None:
    denial(reply, 503, error)
    assert reply.headers["retry-after"] == "1"


def test_fewer_than_t_signers_is_keymints_own_503(stack: LocalStack) -> None:
    assert stack.gateway.alive()
    # Healthy first: a credential that was minted for survives in keymint's cache ...
    cached_svid = stack.svid("/ns/shop/sa/web")
    token = minted(stack.front_call("GET", "/orders/v1/orders", certificate=cached_svid))

    stack.cluster.signers[1].kill()
    stack.cluster.signers[2].kill()

    # ... but a new one cannot be signed for: keymint answers within Envoy's timeout, with its
    # reason, so the caller sees keymint's 503 and not Envoy's status_on_error.
    fresh = stack.front_call("GET", "/orders/v1/orders", certificate=stack.svid("/ns/shop/sa/api"))
    unavailable(fresh, "no_signing_quorum")
    assert minted(stack.front_call("GET", "/orders/v1/orders", certificate=cached_svid)) == token

    # The exchange says the same in OAuth's words.
    exchanged = stack.front_call(
        "POST", "/token", data=exchange_form(stack.oidc_token(jti=str(uuid.uuid4())))
    )
    assert exchanged.status == 503
    assert exchanged.json()["error"] == "temporarily_unavailable"
    assert exchanged.headers["retry-after"] == "1"


def test_gateway_down_is_envoys_503_and_never_a_pass(stack: LocalStack) -> None:
    svid = stack.svid("/ns/shop/sa/web")
    stack.gateway.kill()

    for reply in (
        stack.front_call("GET", "/orders/v1/orders", certificate=svid),
        stack.front_call("GET", "/deploy/v1/releases", headers=bearer(stack.oidc_token())),
        stack.front_call("GET", "/orders/v1/orders"),
    ):
        unavailable(reply, "authorization_unavailable")
    # keymint's HTTP edge is gone too: the exchange and the JWKS say so in the same shape.
    for reply in (
        stack.front_call("POST", "/token", data=exchange_form(stack.oidc_token())),
        stack.front_call("GET", "/.well-known/jwks.json"),
    ):
        denial(reply, 503, "temporarily_unavailable")
    assert stack.front.counter("http.front.ext_authz.keymint.error") >= 3
