"""The gateway's evidence checker inside real signer processes: the signers decide on the same
inputs as the gateway (headers, explicit requests, the policy version), and a policy rollout, in
either order, fails no mint."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from envoy.service.auth.v3.external_auth_pb2 import CheckResponse

from extauthz.config import GatewaySettings
from extauthz.dev.calls import check_request
from extauthz.dev.certs import pem
from extauthz.dev.inprocess import Stack, running_stack
from extauthz.dev.settings import (
    DEPLOY,
    ORDERS,
    TRUST_DOMAIN,
    policy_document,
    root_ca,
    stack_env,
    valid_now,
)
from extauthz.guard_checker import credential_id, from_env
from extauthz.model import Evidence, Grant, Identity, IdentityKind, Route
from extauthz.policy import AuthzRequest
from extauthz.policy.engine import policy_digest
from extauthz.policy.versions import DEFAULT_POLL_SECONDS
from extauthz.server.app import build_identifier, build_policy_engine
from extauthz.server.decision import Allow
from extauthz.server.mint import evidence_message
from signer.guard import EvidenceDecision, GuardEvidence, GuardRefusal

# Long enough that a signer's next check re-reads its policy files.
SIGNERS_POLL = DEFAULT_POLL_SECONDS + 0.2

HEADER_POLICY = """package keymint.authz
import rego.v1

default allow := false

allow if input.attributes.request.http.headers["x-deploy-window"] == "open"
"""


@pytest.fixture
def loop() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as runner:
        yield runner


def status(response: CheckResponse) -> int:
    return 200 if response.status.code == 0 else response.denied_response.status.code


def fresh_token(stack: Stack) -> str:
    return stack.issuer.mint({"jti": str(uuid.uuid4())})


def test_headers_a_rego_policy_reads_reach_the_signers(
    tmp_path: Path, loop: asyncio.Runner
) -> None:
    rego = tmp_path / "policy.rego"
    rego.write_text(HEADER_POLICY)

    async def run() -> tuple[int, int]:
        async with running_stack(tmp_path, REGO_FILE=str(rego)) as stack:
            opened = check_request(bearer=fresh_token(stack), headers={"x-deploy-window": "open"})
            closed = check_request(bearer=fresh_token(stack), headers={"x-deploy-window": "closed"})
            return status(await stack.check(opened)), status(await stack.check(closed))

    # Signed only because the signers saw the header too; refused by the gateway's own policy.
    assert loop.run(run()) == (200, 403)


def test_an_explicit_token_exchange_request_is_decided_the_same_by_the_signers(
    tmp_path: Path, loop: asyncio.Runner
) -> None:
    async def run() -> Allow:
        async with running_stack(tmp_path) as stack:
            decision = await stack.gateway.pipeline.exchange(
                fresh_token(stack), DEPLOY, ("deploy:read",)
            )
            assert isinstance(decision, Allow), decision
            return decision

    allow = loop.run(run())
    assert allow.token.audience == DEPLOY
    assert allow.token.scopes == ("deploy:read",)


def test_a_policy_rollout_in_either_order_fails_no_mint(
    tmp_path: Path, loop: asyncio.Runner
) -> None:
    async def run() -> list[int]:
        async with running_stack(tmp_path) as stack:
            policy_file = Path(stack.env["POLICY_FILE"])
            document = policy_document(stack.issuer.issuer)
            statuses = [status(await stack.check(check_request(bearer=fresh_token(stack))))]

            # The gateway reads the new policy first: the signers re-read theirs on the spot.
            document["roles"]["auditor"] = {"scopes": ["orders:read"], "max_ttl_seconds": 60}
            policy_file.write_text(json.dumps(document))
            stack.gateway.policy.poll()
            statuses.append(status(await stack.check(check_request(bearer=fresh_token(stack)))))

            # The signers read the next one first (their poll is due); the gateway still decides
            # under the version before, which the signers keep honouring for the overlap.
            document["roles"]["auditor"]["max_ttl_seconds"] = 120
            policy_file.write_text(json.dumps(document))
            await asyncio.sleep(SIGNERS_POLL)
            for _ in range(3):
                statuses.append(status(await stack.check(check_request(bearer=fresh_token(stack)))))
            stack.gateway.policy.poll()
            statuses.append(status(await stack.check(check_request(bearer=fresh_token(stack)))))
            return statuses

    assert loop.run(run()) == [200] * 6


def test_a_replaced_policy_is_honoured_only_for_the_overlap(
    tmp_path: Path, loop: asyncio.Runner
) -> None:
    async def run() -> tuple[int, int]:
        async with running_stack(tmp_path, KEYMINT_POLICY_OVERLAP_SECONDS="0") as stack:
            policy_file = Path(stack.env["POLICY_FILE"])
            document = policy_document(stack.issuer.issuer)
            document["roles"]["auditor"] = {"scopes": ["orders:read"], "max_ttl_seconds": 60}
            policy_file.write_text(json.dumps(document))
            await asyncio.sleep(
                SIGNERS_POLL
            )  # the signers' poll is due; the gateway has not looked
            stale = await stack.check(check_request(bearer=fresh_token(stack)))
            stack.gateway.policy.poll()
            fresh = await stack.check(check_request(bearer=fresh_token(stack)))
            return status(stale), status(fresh)

    # With no overlap, the version the signers replaced is refused at once (403 signer_refused).
    assert loop.run(run()) == (403, 200)


def test_the_policy_digest_names_both_files() -> None:
    assert policy_digest("a" * 64, None) != policy_digest("a" * 64, "b" * 64)
    assert policy_digest("a" * 64, "b" * 64) != policy_digest("b" * 64, "a" * 64)
    assert len(policy_digest(None, None)) == 64


def _identity(kind: IdentityKind, *, certificate_sha256: bytes | None = None) -> Identity:
    return Identity(
        kind=kind,
        subject="s",
        issuer="i",
        credential_hash="h",
        expires_at=0,
        evidence=Evidence("oidc_token", b""),
        certificate_sha256=certificate_sha256,
    )


def test_a_tokens_budget_follows_its_claims_not_its_encoding() -> None:
    # base64url's last character may carry bits a decoder ignores: two spellings, one token.
    payload = base64.urlsafe_b64encode(b'{"sub":"a"}').rstrip(b"=")
    assert payload.endswith(b"In0")
    variant = payload[:-1] + b"1"
    assert base64.urlsafe_b64decode(variant + b"=") == base64.urlsafe_b64decode(payload + b"=")
    identity = _identity(IdentityKind.GITHUB_ACTIONS)

    def evidence(segment: bytes) -> GuardEvidence:
        return GuardEvidence("oidc_token", b"eyJhbGciOiJSUzI1NiJ9." + segment + b".c2ln")

    assert credential_id(evidence(payload), identity) == credential_id(evidence(variant), identity)


def test_a_certificates_budget_follows_its_leaf_not_its_pem() -> None:
    leaf = bytes(range(32))
    identity = _identity(IdentityKind.SPIFFE, certificate_sha256=leaf)

    assert credential_id(GuardEvidence("certificate", b"leaf"), identity) == leaf
    assert credential_id(GuardEvidence("certificate", b"leaf\nchain"), identity) == leaf


def test_signers_close_the_checkers_session_when_they_stop(
    tmp_path: Path, loop: asyncio.Runner
) -> None:
    """Every signer's checker fetched the issuer's keys with its HTTP session; a signer told to
    stop closes that session (`GatewayEvidenceChecker.close`): exit 0, nothing left unclosed."""

    async def run() -> dict[int, tuple[int | None, str]]:
        async with running_stack(tmp_path) as stack:
            for _ in range(3):  # enough mints that every signer has verified a token
                assert status(await stack.check(check_request(bearer=fresh_token(stack)))) == 200
            await asyncio.to_thread(stack.cluster.stop)
            return {
                i: (p.process.returncode if p.process else None, p.log.read_text())
                for i, p in stack.cluster.signers.items()
            }

    stopped = loop.run(run())
    for identifier, (code, log) in stopped.items():
        assert code == 0, identifier
        assert "Unclosed" not in log, log[-800:]
        assert f"signer {identifier} stopped" in log


DEPLOY_WINDOW_POLICY = """package envoy.authz
import rego.v1

default allow := false

allow if time.now_ns() < to_number(input.attributes.request.http.headers["x-deploy-until"])
"""


def test_a_signer_applies_a_clock_rule_on_its_own_clock_when_asked_to_sign(
    tmp_path: Path, loop: asyncio.Runner
) -> None:
    """The gateway decides a request; each signer decides it again when asked to sign, reading
    the clock then. A request granted just before a time rule's boundary is refused by a signer
    that evaluates it just after: the same evidence, the same policy version, another instant."""
    ca = root_ca(TRUST_DOMAIN)
    (tmp_path / "trust-bundle.pem").write_bytes(pem(ca.certificate))
    rego = tmp_path / "policy.rego"
    rego.write_text(DEPLOY_WINDOW_POLICY)
    env = {
        **stack_env(tmp_path, "https://token.actions.example.invalid"),
        "REGO_FILE": str(rego),
        "KEYMINT_REGO_ALONE": "true",
        "KEYMINT_REGO_QUERY": "envoy/authz/allow",
    }
    del env["POLICY_FILE"]
    svid = ca.issue_svid(f"spiffe://{TRUST_DOMAIN}/ns/shop/sa/web", **valid_now())
    route = Route(
        "api.internal",
        "/orders/v1/orders/1",
        "GET",
        {"route": "orders", "audience": ORDERS, "scopes": "orders:read"},
    )

    async def run() -> tuple[bool, EvidenceDecision, GuardRefusal]:
        checker = from_env(env)  # what a signer process builds from the same settings
        settings = GatewaySettings.from_env(env)
        engine, _policy, _rego = build_policy_engine(settings)  # the gateway's
        async with aiohttp.ClientSession() as session:
            certificates = build_identifier(settings, session, time.time).certificates
            assert certificates is not None
            identity = certificates.verify_pem(svid.pem)
        until = time.time_ns() + 1_000_000_000
        request = AuthzRequest(identity, route, headers={"x-deploy-until": str(until)})
        granted = isinstance(engine.evaluate(request), Grant)
        evidence = GuardEvidence.from_message(evidence_message(request, engine.snapshot().digest))
        try:
            signed = await checker.check(evidence, time.time())  # at once: inside the window
            await asyncio.sleep((until - time.time_ns()) / 1e9 + 0.1)
            with pytest.raises(GuardRefusal) as refused:
                await checker.check(evidence, time.time())  # the same evidence, just after
        finally:
            await checker.close()
        return granted, signed, refused.value

    granted, signed, refused = loop.run(run())
    assert granted
    assert (signed.audiences, signed.scopes) == (frozenset({ORDERS}), frozenset({"orders:read"}))
    assert refused.rule == "policy_denied"
    assert refused.detail.startswith("rego_denied")
