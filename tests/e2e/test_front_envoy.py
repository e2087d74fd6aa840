"""Through the real front Envoy (envoy/envoy.yaml) to keymint and back, with every piece real:
the gateway process, three signer processes, the local GitHub-shaped OIDC issuer, the echo
upstream, and the upstream-side jwt_authn Envoy (envoy/upstream-jwt.yaml)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import aiohttp
import jwt
import pytest

from extauthz.dev.calls import exchange_form
from extauthz.dev.github import compact_jws
from extauthz.dev.settings import DEPLOY, ISSUER, ORDERS, root_ca, valid_now
from extauthz.dev.stack import LocalStack
from extauthz.identity import github_subject
from extauthz.server.token_exchange import MAX_BODY_BYTES, TOKEN_TYPE_JWT
from tests.e2e.replies import bearer, denial, minted, tampered

SPOOFED_XFCC = "By=spiffe://prod.test/ns/edge/sa/envoy;URI=spiffe://prod.test/ns/shop/sa/admin"
BASIC = "Basic dXNlcjpwYXNzd29yZA=="


# --- (1) a service with an X.509-SVID, over mTLS -------------------------------------------------


def test_svid_caller_gets_a_token_bound_to_its_certificate_and_nothing_else_gets_through(
    stack: LocalStack,
) -> None:
    svid = stack.svid("/ns/shop/sa/web")
    reply = stack.front_call(
        "GET",
        "/orders/v1/orders/42",
        certificate=svid,
        headers={"authorization": BASIC, "x-forwarded-client-cert": SPOOFED_XFCC},
    )
    token = minted(reply)
    claims = stack.decode(token, ORDERS)
    assert claims["sub"] == "spiffe://prod.test/ns/shop/sa/web"
    assert claims["spiffe_id"] == "spiffe://prod.test/ns/shop/sa/web"
    assert claims["scope"] == "orders:read"
    assert claims["cnf"] == {"x5t#S256": jwt.utils.base64url_encode(svid.der_sha256).decode()}
    assert jwt.get_unverified_header(token)["alg"] == "EdDSA"
    # None of the caller's credentials reach the API: not its Authorization, not an XFCC (the
    # spoofed one is dropped by Envoy, Envoy's own is removed by keymint's OK response).
    received = reply.echoed()
    assert "x-forwarded-client-cert" not in received
    everything = repr(received)
    assert BASIC not in everything
    assert "sa/admin" not in everything
    assert reply.json()["path"] == "/orders/v1/orders/42"


def test_a_certificate_from_an_untrusted_ca_is_refused_in_the_handshake(stack: LocalStack) -> None:
    impostor = root_ca("prod.test").issue_svid("spiffe://prod.test/ns/shop/sa/web", **valid_now())
    with pytest.raises(aiohttp.ClientError):
        stack.front_call("GET", "/orders/v1/orders", certificate=impostor)


def test_a_bound_token_replayed_without_its_certificate_is_refused(stack: LocalStack) -> None:
    svid = stack.svid("/ns/shop/sa/checkout")
    token = minted(stack.front_call("GET", "/orders/v1/orders", certificate=svid))
    # Presented back with the certificate it is bound to: passed through unchanged.
    again = stack.front_call("GET", "/orders/v1/orders", certificate=svid, headers=bearer(token))
    assert minted(again) == token
    # Stolen and replayed without it: refused.
    replayed = stack.front_call("GET", "/orders/v1/orders", headers=bearer(token))
    denial(replayed, 401, "invalid_claim")
    # Or with another workload's certificate.
    other = stack.svid("/ns/shop/sa/web")
    stolen = stack.front_call("GET", "/orders/v1/orders", certificate=other, headers=bearer(token))
    denial(stolen, 401, "invalid_claim")


# --- (2) a CI job with its GitHub Actions OIDC token ---------------------------------------------


def test_ci_job_calls_transparently_with_its_oidc_token(stack: LocalStack) -> None:
    oidc = stack.oidc_token()
    reply = stack.front_call("POST", "/deploy/v1/releases", headers=bearer(oidc))
    claims = stack.decode(minted(reply), DEPLOY)
    assert claims["sub"] == github_subject(stack.issuer.issuer, "65", "74")
    assert claims["repository_id"] == "74"
    assert claims["scope"] == "deploy:read deploy:write"
    assert "cnf" not in claims
    assert oidc not in repr(reply.echoed())


def test_ci_job_exchanges_at_token_through_envoy_then_calls_with_the_result(
    stack: LocalStack,
) -> None:
    oidc = stack.oidc_token(jti=str(uuid.uuid4()))
    exchanged = stack.front_call("POST", "/token", data=exchange_form(oidc))
    assert exchanged.status == 200, exchanged.body
    assert exchanged.headers["cache-control"] == "no-store"
    answer = exchanged.json()
    assert answer["token_type"] == "Bearer"
    assert answer["issued_token_type"] == TOKEN_TYPE_JWT
    assert 0 < answer["expires_in"] <= 600
    access_token = answer["access_token"]
    claims = stack.decode(access_token, DEPLOY)
    assert claims["sub"] == github_subject(stack.issuer.issuer, "65", "74")

    # keymint's own token presented back is passed through unchanged: no second signature, and
    # the upstream sees exactly what /token issued.
    reply = stack.front_call("POST", "/deploy/v1/releases", headers=bearer(access_token))
    assert minted(reply) == access_token
    # It is good for its audience only.
    elsewhere = stack.front_call("GET", "/orders/v1/orders", headers=bearer(access_token))
    denial(elsewhere, 401, "bad_audience")
    # And a forged variant of it is not ours.
    forged = stack.front_call("POST", "/deploy/v1/releases", headers=bearer(tampered(access_token)))
    denial(forged, 401, "bad_signature")


def test_token_endpoint_answers_in_oauth_json_through_envoy(stack: LocalStack) -> None:
    refused = stack.front_call("POST", "/token", data=exchange_form("not-a-jwt"))
    assert refused.status == 400
    assert refused.json()["error"] == "invalid_request"
    # An oversized body is refused by Envoy before keymint reads it, in the same shape.
    huge = stack.front_call(
        "POST",
        "/token",
        headers={"content-type": "application/x-www-form-urlencoded"},
        data=b"subject_token=" + b"a" * MAX_BODY_BYTES,
    )
    assert huge.status == 413
    assert huge.json()["error"] == "invalid_request"


# --- (3) denials through Envoy, each readable ----------------------------------------------------


def _alg_none(stack: LocalStack) -> dict[str, str]:
    header = stack.issuer.header({"alg": "none"})
    return bearer(compact_jws(header, stack.issuer.claims(), None))


def _expired(stack: LocalStack) -> dict[str, str]:
    now = int(time.time())
    return bearer(stack.oidc_token(iat=now - 400, nbf=now - 400, exp=now - 100))


DENIALS: dict[str, tuple[str, int, str, Callable[[LocalStack], dict[str, str]]]] = {
    "no credential": ("/orders/v1/orders", 401, "missing_credential", lambda s: {}),
    "basic auth only": (
        "/orders/v1/orders",
        401,
        "missing_credential",
        lambda s: {"authorization": BASIC},
    ),
    "spoofed xfcc only": (
        "/orders/v1/orders",
        401,
        "missing_credential",
        lambda s: {"x-forwarded-client-cert": SPOOFED_XFCC},
    ),
    "alg none": ("/deploy/v1/releases", 401, "alg_not_allowed", _alg_none),
    "wrong audience": (
        "/deploy/v1/releases",
        401,
        "bad_audience",
        lambda s: bearer(s.oidc_token(aud="https://someone-else.example")),
    ),
    "expired": ("/deploy/v1/releases", 401, "token_expired", _expired),
    "tampered oidc": (
        "/deploy/v1/releases",
        401,
        "bad_signature",
        lambda s: bearer(tampered(s.oidc_token())),
    ),
    "other repository": (
        "/deploy/v1/releases",
        403,
        "no_matching_binding",
        lambda s: bearer(s.oidc_token(repository_id="75")),
    ),
    "ci token on the orders route": (
        "/orders/v1/orders",
        403,
        "audience_not_allowed",
        lambda s: bearer(s.oidc_token()),
    ),
}


@pytest.mark.parametrize("case", list(DENIALS))
def test_denials_are_readable_json(stack: LocalStack, case: str) -> None:
    path, status, error, headers = DENIALS[case]
    reply = stack.front_call("GET", path, headers=headers(stack))
    body = denial(reply, status, error)
    assert body["detail"]
    assert reply.headers["cache-control"] == "no-store"
    if status == 401:
        assert reply.headers["www-authenticate"].startswith('Bearer realm="keymint"')


def test_an_svid_outside_its_binding_is_forbidden(stack: LocalStack) -> None:
    svid = stack.svid("/ns/shop/sa/web")
    denial(
        stack.front_call("GET", "/deploy/v1/releases", certificate=svid),
        403,
        "audience_not_allowed",
    )
    outsider = stack.svid("/ns/billing/sa/web")
    denial(
        stack.front_call("GET", "/orders/v1/orders", certificate=outsider),
        403,
        "no_matching_binding",
    )


def test_only_the_exchange_and_the_public_documents_of_keymint_are_exposed(
    stack: LocalStack,
) -> None:
    discovery = stack.front_call("GET", "/.well-known/openid-configuration")
    assert discovery.status == 200
    assert discovery.json()["issuer"] == ISSUER
    rfc8414 = stack.front_call("GET", "/.well-known/oauth-authorization-server")
    assert rfc8414.json() == discovery.json()
    authorize = stack.front_call("GET", "/authorize?response_type=code&client_id=x")
    assert authorize.status == 400
    assert authorize.json()["error"] == "unsupported_response_type"
    jwks = stack.jwks()
    assert [k["kty"] for k in jwks["keys"]] == ["OKP"]
    for path in ("/metrics", "/healthz", "/readyz", "/admin/revocations", "/v1/anything"):
        denial(stack.front_call("GET", path), 404, "not_found")


# --- (4) the upstream verifies keymint's tokens itself with jwt_authn ----------------------------


def test_upstream_jwt_authn_accepts_minted_tokens_and_rejects_the_rest(stack: LocalStack) -> None:
    orders_token = minted(
        stack.front_call("GET", "/orders/v1/orders", certificate=stack.svid("/ns/shop/sa/web"))
    )
    deploy_token = minted(
        stack.front_call("GET", "/deploy/v1/releases", headers=bearer(stack.oidc_token()))
    )

    accepted = stack.jwt_call("/orders/v1/orders", bearer=orders_token)
    assert minted(accepted) == orders_token  # forwarded, so the API may read the claims too
    assert minted(stack.jwt_call("/deploy/v1/releases", bearer=deploy_token)) == deploy_token

    assert stack.jwt_call("/orders/v1/orders").status == 401
    assert stack.jwt_call("/orders/v1/orders", bearer=tampered(orders_token)).status == 401
    header, payload, _ = orders_token.split(".")
    unsigned = f"{header}.{payload}."
    assert stack.jwt_call("/orders/v1/orders", bearer=unsigned).status == 401
    # A valid keymint token for another API: authenticated, but not for this audience.
    assert stack.jwt_call("/orders/v1/orders", bearer=deploy_token).status == 403
    # A GitHub token is not a keymint token, whatever it claims.
    assert stack.jwt_call("/deploy/v1/releases", bearer=stack.oidc_token()).status == 401
    # Paths without a route of their own still need a keymint token.
    assert stack.jwt_call("/elsewhere").status == 401
