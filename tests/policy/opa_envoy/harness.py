"""How a case reaches the gateway: through its Check (`Arena`: the gateway in this process, real
signer processes) or through the real front Envoy (`use`, `call`: the gateway process). Either way
a policy is put in force as an operator would: by writing the Rego file, which the gateway
reloads."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse

from extauthz.dev.calls import check_request
from extauthz.dev.certs import IssuedCertificate
from extauthz.dev.inprocess import Stack, running_stack
from extauthz.dev.servers import Reply
from extauthz.dev.settings import ISSUER, OIDC_AUDIENCE
from extauthz.dev.signers import SignerCluster
from extauthz.dev.stack import REQUIRED_CLAIMS, LocalStack
from extauthz.policy import ReloadOutcome
from extauthz.policy.rego_input import PARTIAL_BODY_HEADER
from tests.envoy.harness import REQUEST_BODY_MARKER, readme_snippet
from tests.policy.opa_envoy import POLICIES, Case, Minted, policy_text, sha256

RELOAD_TIMEOUT = 30.0
# What envoy/README.md's `with_request_body` lets through (`allow_partial_message: true`).
MAX_REQUEST_BYTES: int = yaml.safe_load(readme_snippet(REQUEST_BODY_MARKER))["with_request_body"][
    "max_request_bytes"
]

# --- through Check ----------------------------------------------------------------------------


@dataclass
class Arena:
    """`routes` maps a route key (the path's first segment) to the `context_extensions` Envoy's
    route sends; a key not named sends only `{"route": key}`, as envoy/envoy.yaml's routes do."""

    runner: asyncio.Runner
    stack: Stack
    routes: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def use(self, name: str) -> None:
        """Put policy `name` in force: write the Rego file, reload it (which flushes the hot
        cache); the signers find the new version when the first sign request names it."""
        text = policy_text(name, jwks=self.stack.issuer.jwks_json(), audience=OIDC_AUDIENCE)
        path = self.stack.env["REGO_FILE"]
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
        assert self.stack.gateway.rego is not None
        outcome = self.stack.gateway.rego.reload().outcome
        assert outcome in (ReloadOutcome.SWAPPED, ReloadOutcome.UNCHANGED)

    def check(self, case: Case) -> CheckResponse:
        return self.called(case)[0]

    def called(
        self, case: Case, certificate: IssuedCertificate | None = None
    ) -> tuple[CheckResponse, str | None]:
        """The answer to the case's request, and the bearer token the caller sent (if any)."""
        request, bearer = self.request(case, certificate)
        response: CheckResponse = self.runner.run(self.stack.check(request))
        return response, bearer

    def request(
        self, case: Case, certificate: IssuedCertificate | None = None
    ) -> tuple[CheckRequest, str | None]:
        """The CheckRequest the front Envoy sends for this request, and the caller's token.
        An SVID caller presents `certificate`, or else a new SVID for `case.svid`. A body past
        MAX_REQUEST_BYTES is cut there and marked partial, as Envoy does."""
        route_key = case.path.split("/")[1]
        token = None
        if case.caller == "ci":
            token = self.stack.issuer.mint({"jti": str(uuid.uuid4()), **case.claims})
            request = check_request(bearer=token, route_key=route_key, path=case.path)
        elif case.caller == "none":
            request = check_request(route_key=route_key, path=case.path)
        else:
            svid = certificate or self.stack.svid(case.svid)
            request = check_request(certificate=svid, route_key=route_key, path=case.path)
        request.attributes.context_extensions.update(self.routes.get(route_key, {}))
        http = request.attributes.request.http
        http.method = case.method
        http.headers.update(case.headers)
        if case.body is not None:
            body = case.body.encode()
            http.headers["content-length"] = str(len(body))
            if len(body) > MAX_REQUEST_BYTES:  # Envoy sends the first bytes, marked partial
                body = body[:MAX_REQUEST_BYTES]
                http.headers[PARTIAL_BODY_HEADER] = "true"
            http.body = body.decode()
        return request, token

    def claims(self, token: str, audience: str) -> dict[str, Any]:
        """A minted token's claims, verified against the signers' group key."""
        key = Ed25519PublicKey.from_public_bytes(self.stack.gateway.group_public_key)
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=["EdDSA"],
            audience=audience,
            issuer=ISSUER,
            options={"require": REQUIRED_CLAIMS},
        )
        return claims


@contextmanager
def check_arena(
    directory: Path,
    settings: Mapping[str, str],
    *,
    unset: tuple[str, ...] = (),
    routes: Mapping[str, Mapping[str, str]] | None = None,
) -> Iterator[Arena]:
    """An in-process stack running boolean.rego under `settings` (beside REGO_FILE)."""
    rego = directory / "policy.rego"
    rego.write_text((POLICIES / "boolean.rego").read_text())
    with asyncio.Runner() as runner:
        context = running_stack(directory, unset=unset, REGO_FILE=str(rego), **settings)
        stack = runner.run(context.__aenter__())
        try:
            yield Arena(runner, stack, routes or {})
        finally:
            runner.run(context.__aexit__(None, None, None))


def outcome(response: CheckResponse) -> dict[str, Any]:
    """What Envoy does with the answer: the status, what the upstream gets, what the caller
    gets."""
    if response.status.code == 0:
        ok = response.ok_response
        return {
            "status": 200,
            "upstream": {o.header.key: o.header.value for o in ok.headers},
            "removed": list(ok.headers_to_remove),
            "reply": {o.header.key: o.header.value for o in ok.response_headers_to_add},
        }
    denied = response.denied_response
    return {
        "status": denied.status.code,
        "reply": {o.header.key: o.header.value for o in denied.headers},
        "body": denied.body,
    }


def assert_minted(claims: Mapping[str, Any], minted: Minted, bearer: str | None) -> None:
    """The token says what `minted` says it must."""
    assert (claims["aud"], claims["scope"]) == (minted.audience, minted.scope), claims
    if minted.lifetime is not None:
        assert claims["exp"] - claims["iat"] == minted.lifetime, claims
        return
    # The caller's own credential expires first: the token ends with it.
    assert bearer is not None
    presented = jwt.decode(bearer, options={"verify_signature": False})
    assert claims["exp"] == presented["exp"], (claims, presented["exp"])


def signer_records(cluster: SignerCluster, identifier: int) -> list[dict[str, Any]]:
    """A signer's audit log, as records."""
    path = cluster.state_dir(identifier) / "audit.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line) for line in lines]


def asked_to_sign(cluster: SignerCluster) -> list[str]:
    """The jti of every token any signer was asked to sign, once per signer asked."""
    return [
        r["data"]["claims"].get("jti", "")
        for identifier in cluster.signers
        for r in signer_records(cluster, identifier)
        if r["event"] == "sign_request"
    ]


def signed_by(cluster: SignerCluster, jti: str) -> set[int]:
    """The signers whose audit log records a sign request for token `jti` and no refusal of it:
    the ones whose guards, running their own policy, agreed to sign."""
    signed = set()
    for identifier in cluster.signers:
        records = signer_records(cluster, identifier)
        asked = any(
            r["event"] == "sign_request" and r["data"]["claims"].get("jti") == jti for r in records
        )
        refused = any(r["event"] == "refusal" and r["data"]["request_id"] == jti for r in records)
        if asked and not refused:
            signed.add(identifier)
    return signed


# --- through the front Envoy ------------------------------------------------------------------


def wait_for_log(stack: LocalStack, text: str, after: int) -> None:
    """The gateway polls its Rego file every 2 s and logs each reload or refusal: wait for
    `text` in what it logged past byte `after`."""
    log = stack.gateway.log
    deadline = time.monotonic() + RELOAD_TIMEOUT
    while time.monotonic() < deadline:
        if text in log.read_bytes()[after:].decode(errors="replace"):
            return
        time.sleep(0.1)
    raise AssertionError(f"the gateway never logged {text!r}: see {log}")


def use(stack: LocalStack, name: str) -> None:
    """Put policy `name` in force by writing the Rego file, as an operator would."""
    path = Path(stack.env["REGO_FILE"])
    text = policy_text(name, jwks=stack.issuer.jwks_json(), audience=OIDC_AUDIENCE)
    if path.read_text() == text:
        return
    logged = stack.gateway.log.stat().st_size
    path.write_text(text)
    wait_for_log(stack, f"reloaded (sha256 {sha256(text)})", logged)


def call(stack: LocalStack, case: Case) -> Reply:
    return called(stack, case)[0]


def called(stack: LocalStack, case: Case) -> tuple[Reply, str | None]:
    """The reply to the case's request through the front Envoy, and the caller's token."""
    headers = dict(case.headers)
    certificate = None
    token = None
    if case.caller == "ci":
        token = stack.oidc_token(jti=str(uuid.uuid4()), **case.claims)
        headers["authorization"] = f"Bearer {token}"
    elif case.caller != "none":
        certificate = stack.svid(case.svid)
    data = None if case.body is None else case.body.encode()
    reply = stack.front_call(
        case.method, case.path, certificate=certificate, headers=headers, data=data
    )
    return reply, token
