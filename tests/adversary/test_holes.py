"""Attacks on the smaller holes of issue 8, against the gateway run in this process
(extauthz.dev.inprocess: reached over its mTLS Check port, as Envoy reaches it) and real signer
processes.

The attacker sits where a caller behind the trusted proxy sits, or holds what the gateway's Check
port accepts, or controls an OIDC issuer's key. Each attack is one test and asserts the named
refusal. The trusted proxy here is itself a workload policy would grant (its SPIFFE ID matches the
shop binding), so borrowing its identity would be a real grant, not a harmless one.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
from collections.abc import Iterator

import pytest
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse

from extauthz.dev.calls import check_request
from extauthz.dev.inprocess import Stack, running_stack

PROXY = "spiffe://prod.test/ns/shop/sa/edge-proxy"  # trusted, and granted orders:read itself
VICTIM = "spiffe://prod.test/ns/shop/sa/web"


@pytest.fixture(scope="module")
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as runner:
        yield runner


@pytest.fixture(scope="module")
def stack(runner: asyncio.Runner, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    context = running_stack(
        tmp_path_factory.mktemp("adversary-holes"), KEYMINT_TRUSTED_PROXIES=PROXY
    )
    yield runner.run(context.__aenter__())
    runner.run(context.__aexit__(None, None, None))


def refusal(response: CheckResponse) -> tuple[int, str, str]:
    assert response.status.code != 0, "the attack was granted a token"
    body = json.loads(response.denied_response.body)
    return response.denied_response.status.code, body["error"], body["detail"]


def subject(response: CheckResponse) -> str:
    assert response.status.code == 0, response.denied_response.body
    fields = response.dynamic_metadata.fields["keymint"].struct_value.fields
    return str(fields["subject"].string_value)


def signer_records(stack: Stack) -> int:
    paths = [stack.cluster.directory / f"signer-{i}" / "audit.jsonl" for i in (1, 2, 3)]
    return sum(len(p.read_bytes().splitlines()) for p in paths if p.exists())


def from_proxy(stack: Stack, xfcc: str | None) -> CheckRequest:
    """A request relayed by the trusted proxy: its own certificate on the connection."""
    return check_request(
        certificate=stack.svid("/ns/shop/sa/edge-proxy"),
        route_key="orders",
        principal=PROXY,
        headers={} if xfcc is None else {"x-forwarded-client-cert": xfcc},
    )


def test_a_caller_behind_the_trusted_proxy_cannot_borrow_the_proxys_identity(
    runner: asyncio.Runner, stack: Stack
) -> None:
    """Envoy forwards the proxy's own certificate with every request it relays; one that carries
    no XFCC used to be answered with a token in the proxy's name."""
    status, error, detail = refusal(runner.run(stack.check(from_proxy(stack, None))))
    assert (status, error) == (401, "certificate_not_forwarded")
    assert f"the trusted proxy {PROXY} forwarded no x-forwarded-client-cert" in detail
    # Control: with the caller's certificate in XFCC, the token is the caller's, signed by the
    # signers (whose audit logs the other attacks watch for a signing round).
    before = signer_records(stack)
    victim = stack.svid("/ns/shop/sa/web")
    xfcc = f'By={PROXY};Cert="{urllib.parse.quote(victim.pem.decode(), safe="")}"'
    assert subject(runner.run(stack.check(from_proxy(stack, xfcc)))) == VICTIM
    assert signer_records(stack) > before


def test_a_uri_only_xfcc_from_the_trusted_proxy_names_no_one(
    runner: asyncio.Runner, stack: Stack
) -> None:
    before = signer_records(stack)
    forged = f"By={PROXY};URI=spiffe://prod.test/ns/shop/sa/admin"
    status, error, detail = refusal(runner.run(stack.check(from_proxy(stack, forged))))
    assert (status, error) == (401, "certificate_not_forwarded")
    assert "must forward the client certificate" in detail
    assert signer_records(stack) == before  # refused before any signing round


def test_a_bare_principal_gets_no_token_and_no_signing_round(
    runner: asyncio.Runner, stack: Stack
) -> None:
    """A principal without a certificate is the gateway's word: signers would refuse it after a
    wasted round; the gateway now refuses it first and says what Envoy must send."""
    before = signer_records(stack)
    request = check_request(route_key="orders", principal=VICTIM)
    status, error, detail = refusal(runner.run(stack.check(request)))
    assert (status, error) == (401, "certificate_not_forwarded")
    assert "include_peer_certificate: true" in detail
    assert signer_records(stack) == before


def test_an_upstream_token_valid_for_a_year_is_refused(
    runner: asyncio.Runner, stack: Stack
) -> None:
    """Whoever holds the issuer's key (or a misissuing issuer) mints a token that lives a year:
    correctly signed, young and unexpired, and still refused for its lifetime."""
    now = int(time.time())
    token = stack.issuer.mint({"iat": now, "nbf": now, "exp": now + 365 * 86400})
    status, error, detail = refusal(runner.run(stack.check(check_request(bearer=token))))
    assert (status, error) == (401, "token_lifetime_too_long")
    assert "over the 3600 s" in detail
