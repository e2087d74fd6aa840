"""Token exchange: the sans-IO form parser and decision mapping, then the edge over a real Pipeline.

The end-to-end part runs a local GitHub-like OIDC issuer, the real verifier, policy engine, minter
and pipeline; only the FROST quorum is replaced, by one Ed25519 key (the group key is an ordinary
Ed25519 key, so tokens verify the same way). It shows that an admin revocation is honoured at once
on both edges: `/token` and Envoy's Check, including its hot cache.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse

from extauthz.dev.github import DEFAULT_AUDIENCE, LocalOidcIssuer, SigningKey
from extauthz.identity import GitHubOidcVerifier, JwksSettings, Reason
from extauthz.policy import DenyReason, Limits, PolicyEngine
from extauthz.policy.loader import compile_policy
from extauthz.server.decision import Deny
from extauthz.server.http_edge import PipelineBackend, build_app, start_app
from extauthz.server.limits import Revocations
from extauthz.server.mint import Minter, MintSettings
from extauthz.server.pipeline import Identifier, Pipeline
from extauthz.server.token_exchange import (
    GRANT_TYPE_TOKEN_EXCHANGE,
    MAX_AUDIENCE_CHARS,
    MAX_SCOPE_CHARS,
    TOKEN_TYPE_JWT,
    ExchangeError,
    answer_decision,
    parse_exchange,
    safe_description,
)
from signer.coordinator import QuorumUnavailable
from signer.proto import signer_pb2
from tests.extauthz.policy import DEPLOY, ORDERS, policy_document
from tests.helpers import ManualClock, Run

FORM = "application/x-www-form-urlencoded"
KEYMINT = "https://keymint.test"
ADMIN_TOKEN = "admin-token-for-tests"

# --- the form parser, without I/O -----------------------------------------------------------------


def form(**fields: str) -> bytes:
    base = {
        "grant_type": GRANT_TYPE_TOKEN_EXCHANGE,
        "subject_token": "header.payload.signature",
        "subject_token_type": TOKEN_TYPE_JWT,
    }
    return "&".join(f"{k}={v}" for k, v in {**base, **fields}.items()).encode()


def test_parse_decodes_percent_escapes_and_plus() -> None:
    request = parse_exchange(
        FORM, form(audience="https%3A%2F%2Fdeploy.example.com", scope="deploy%3Aread+deploy:write")
    )
    assert request.audience == "https://deploy.example.com"
    assert request.scopes == ("deploy:read", "deploy:write")


def test_the_subject_token_stays_out_of_repr() -> None:
    request = parse_exchange(FORM, form())
    assert "header.payload.signature" not in repr(request)


def test_parse_honours_a_smaller_body_limit() -> None:
    with pytest.raises(ExchangeError) as caught:
        parse_exchange(FORM, form(), max_body_bytes=10)
    assert (caught.value.status, caught.value.error) == (413, "invalid_request")


@pytest.mark.parametrize(
    ("body", "description"),
    [
        (form(audience="a" * MAX_AUDIENCE_CHARS + "a"), "audience is over 1024 characters"),
        (form(scope="deploy:read " * 85 + "deploy:read"), "scope is over 1024 characters"),
        (
            form() + f"&subject_token_type={TOKEN_TYPE_JWT}".encode(),
            "subject_token_type is repeated",
        ),
        (form(scope="a") + b"&scope=b", "scope is repeated"),
        (
            form(requested_token_type=TOKEN_TYPE_JWT)
            + f"&requested_token_type={TOKEN_TYPE_JWT}".encode(),
            "requested_token_type is repeated",
        ),
    ],
)
def test_a_parameter_repeated_or_oversized_is_invalid_request_naming_it(
    body: bytes, description: str
) -> None:
    with pytest.raises(ExchangeError) as caught:
        parse_exchange(FORM, body)
    assert (caught.value.status, caught.value.error) == (400, "invalid_request")
    assert caught.value.description == description


def test_an_audience_and_a_scope_at_their_limits_are_read() -> None:
    audience, scope = "a" * MAX_AUDIENCE_CHARS, "s" * MAX_SCOPE_CHARS
    request = parse_exchange(FORM, form(audience=audience, scope=scope))
    assert (request.audience, request.scopes) == (audience, (scope,))


def test_safe_description_keeps_only_rfc_6749_characters() -> None:
    assert safe_description('a "quoted" \\ path\tö') == "a 'quoted' / path??"
    assert len(safe_description("x" * 1000)) == 300


# --- the decision mapping, without I/O ------------------------------------------------------------


@pytest.mark.parametrize("reason", list(Reason))
def test_every_refused_credential_is_invalid_request(reason: Reason) -> None:
    answer = answer_decision(Deny.unauthenticated(str(reason), "refused"), now=0)
    assert (answer.status, answer.body["error"]) == (400, "invalid_request")


@pytest.mark.parametrize("reason", list(DenyReason))
def test_every_policy_denial_is_a_client_error_or_a_server_fault(reason: DenyReason) -> None:
    answer = answer_decision(Deny.forbidden(str(reason), "denied"), now=0)
    expected = {
        DenyReason.UNKNOWN_AUDIENCE: "invalid_target",
        DenyReason.AUDIENCE_NOT_ALLOWED: "invalid_target",
        DenyReason.SCOPE_NOT_ALLOWED: "invalid_scope",
        DenyReason.NO_SCOPES: "invalid_scope",
        DenyReason.REGO_ERROR: "server_error",
    }.get(reason, "invalid_request")
    assert answer.body["error"] == expected
    assert answer.status == (500 if expected == "server_error" else 400)


# --- end to end over a real Pipeline --------------------------------------------------------------


@dataclass(frozen=True)
class Signed:
    signature: bytes
    signers: tuple[int, ...]


class SingleKeySigner:
    """Stands in for the coordinator: one Ed25519 key instead of a t-of-n quorum (or a
    `failure` a test sets)."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.failure: Exception | None = None

    async def sign(
        self,
        message: bytes,
        *,
        evidence: signer_pb2.Evidence | None = None,
        request_id: str = "",
        timeout: float = 2.0,
    ) -> Signed:
        if self.failure is not None:
            raise self.failure
        return Signed(self._key.sign(message), (1, 2))


@dataclass
class RecordingAudit:
    events: list[tuple[str, dict[str, object]]] = field(default_factory=list)

    async def append(self, event: str, data: Mapping[str, object] | None = None) -> object:
        self.events.append((event, dict(data or {})))
        return None


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any


class World:
    """A local OIDC issuer, the real pipeline behind the HTTP edge, and a client for both edges."""

    def __init__(self, run: Run, oidc_key: SigningKey) -> None:
        self.run = run
        self.clock = ManualClock(float(int(time.time())))  # PyJWT checks exp on the real clock
        self.issuer = run(LocalOidcIssuer(clock=self.clock, keys=[oidc_key]).start())
        self.session = run(_open_session())
        document = policy_document()
        document["bindings"][3]["match"]["issuer"] = self.issuer.issuer  # deploy-main
        group_key = Ed25519PrivateKey.generate()
        public = group_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.audit = RecordingAudit()
        self.signer = SingleKeySigner(group_key)
        verifier = GitHubOidcVerifier.for_issuers(
            [self.issuer.issuer],
            audiences=[DEFAULT_AUDIENCE],
            session=self.session,
            jwks_settings=JwksSettings(insecure_allow_http=True),
            clock=self.clock,
        )
        scopes = frozenset({"deploy:read", "deploy:write", "orders:read"})
        self.pipeline = Pipeline(
            identifier=Identifier(oidc=verifier),
            engine=PolicyEngine(
                limits=Limits(scopes, 900), policy=compile_policy(document, "test-policy")
            ),
            minter=Minter(
                settings=MintSettings(issuer=KEYMINT),
                signer=self.signer,
                group_public_key=lambda: public,
                clock=self.clock,
            ),
            revocations=Revocations(clock=self.clock),
            audit=self.audit,
            clock=self.clock,
        )
        backend = PipelineBackend(
            pipeline=self.pipeline,
            issuer=KEYMINT,
            admin_token_sha256=hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest(),
            group_public_key=lambda: public,
            quorum_ready=lambda: True,
            audit_log=self.audit,
        )
        self.runner, port = run(start_app(build_app(backend, clock=self.clock), "127.0.0.1:0"))
        self.base = f"http://127.0.0.1:{port}"
        self.subject_token = self.issuer.mint()
        # What revocations name: the issuer and the numeric ids, not the upstream `sub`.
        self.subject = f"{self.issuer.issuer}#repository_owner_id=65&repository_id=74"

    def close(self) -> None:
        self.run(self.runner.cleanup())
        self.run(self.session.close())
        self.run(self.issuer.stop())

    def call(self, method: str, path: str, **kwargs: Any) -> Reply:
        async def call() -> Reply:
            async with self.session.request(method, self.base + path, **kwargs) as response:
                return Reply(response.status, json.loads(await response.read()))

        return self.run(call())

    def exchange(self, **fields: str) -> Reply:
        data = {
            "grant_type": GRANT_TYPE_TOKEN_EXCHANGE,
            "subject_token": self.subject_token,
            "subject_token_type": TOKEN_TYPE_JWT,
            "audience": DEPLOY,
            "scope": "deploy:read",
            **fields,
        }
        return self.call("POST", "/token", data=data)

    def revoke(self, **document: object) -> Reply:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        return self.call("POST", "/admin/revoke", json=document, headers=headers)

    def check(self) -> CheckResponse:
        """Envoy's Check for a deploy call carrying the same OIDC token."""
        request = CheckRequest()
        http = request.attributes.request.http
        http.host, http.path, http.method = "deploy.example.com", "/api/deployments/shop", "POST"
        http.headers["authorization"] = f"Bearer {self.subject_token}"
        return self.run(self.pipeline.check(request))

    def verify(self, token: str) -> dict[str, Any]:
        """What an upstream does with a minted token: verify it against the edge's JWKS."""
        keys = {k["kid"]: k for k in self.call("GET", "/.well-known/jwks.json").body["keys"]}
        key = jwt.PyJWK(keys[jwt.get_unverified_header(token)["kid"]])
        claims: dict[str, Any] = jwt.decode(
            token, key, algorithms=["EdDSA"], audience=DEPLOY, issuer=KEYMINT
        )
        return claims


async def _open_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession()


def jti_of(response: CheckResponse) -> str:
    return str(response.dynamic_metadata["keymint"]["jti"])


@pytest.fixture(scope="module")
def oidc_key() -> SigningKey:
    return SigningKey.generate("key-1")  # RSA generation is slow: one per module


@pytest.fixture
def world(oidc_key: SigningKey) -> Iterator[World]:
    with asyncio.Runner() as runner:
        world = World(runner.run, oidc_key)
        yield world
        world.close()


def test_a_minted_token_verifies_against_the_edges_jwks(world: World) -> None:
    reply = world.exchange()
    assert reply.status == 200, reply.body
    claims = world.verify(reply.body["access_token"])
    assert claims["sub"] == world.subject
    assert claims["repository"] == "octo-org/octo-repo"  # names stay, as provenance
    assert claims["scope"] == reply.body["scope"] == "deploy:read"
    assert reply.body["expires_in"] == claims["exp"] - int(world.clock())
    assert world.audit.events[-1][0] == "mint"


@pytest.mark.parametrize(
    ("fields", "error", "reason"),
    [
        ({"audience": "https://nowhere.example.com"}, "invalid_target", "unknown_audience"),
        ({"audience": ORDERS}, "invalid_target", "audience_not_allowed"),
        ({"scope": "orders:read"}, "invalid_scope", "scope_not_allowed"),
        ({"audience": ""}, "invalid_request", "no_audience"),
        ({"subject_token": "not.a.jwt"}, "invalid_request", "malformed_token"),
    ],
)
def test_the_pipelines_denials_reach_the_client_as_oauth_errors(
    world: World, fields: dict[str, str], error: str, reason: str
) -> None:
    reply = world.exchange(**fields)
    assert reply.status == 400
    assert reply.body["error"] == error
    assert reply.body["error_description"].startswith(f"{reason}: ")
    assert world.audit.events[-1][0] == "deny"


def test_a_revoked_jti_is_never_served_again_by_token(world: World) -> None:
    first = world.verify(world.exchange().body["access_token"])
    assert world.verify(world.exchange().body["access_token"])["jti"] == first["jti"]  # cached
    assert world.revoke(jti=first["jti"], until=first["exp"]).status == 200
    again = world.verify(world.exchange().body["access_token"])
    assert again["jti"] != first["jti"]
    assert world.audit.events[-2] == ("revoke", {"jti": first["jti"], "until": first["exp"]})


def test_a_revoked_subject_is_refused_at_once_by_token(world: World) -> None:
    assert world.exchange().status == 200
    assert world.revoke(subject=world.subject, until=world.clock() + 3600).status == 200
    reply = world.exchange()
    assert (reply.status, reply.body["error"]) == (400, "invalid_request")
    assert reply.body["error_description"].startswith("subject_revoked: ")


def test_revocations_reach_envoys_hot_cache_at_once(world: World) -> None:
    first = world.check()
    assert first.status.code == 0
    assert jti_of(world.check()) == jti_of(first)  # served from the hot cache
    world.revoke(jti=jti_of(first), until=world.clock() + 900)
    second = world.check()
    assert second.status.code == 0
    assert jti_of(second) != jti_of(first)

    world.revoke(subject=world.subject, until=world.clock() + 60)
    denied = world.check()
    assert denied.denied_response.status.code == 403
    assert json.loads(denied.denied_response.body)["error"] == "subject_revoked"


def test_upstream_token_living_longer_than_its_issuer_allows_is_refused_at_check_and_token(
    world: World,
) -> None:
    now = int(world.clock())
    world.subject_token = world.issuer.mint({"iat": now, "nbf": now, "exp": now + 7 * 86400})
    reply = world.exchange()
    assert (reply.status, reply.body["error"]) == (400, "invalid_request")
    assert reply.body["error_description"].startswith("token_lifetime_too_long: ")
    status, body = denied(world.check())
    assert (status, body["error"]) == (401, "token_lifetime_too_long")
    assert "over the 3600 s" in str(body["detail"])


def test_a_quorum_failure_tells_the_token_client_only_the_reason(world: World) -> None:
    """The same QuorumUnavailable as on Check: /token says the reason and nothing internal."""
    world.signer.failure = QuorumUnavailable(
        2, 1, {2: "10.20.0.7:7001 unreachable: connection refused"}
    )
    reply = world.exchange()
    assert (reply.status, reply.body["error"]) == (503, "temporarily_unavailable")
    assert reply.body["error_description"] == "no_signing_quorum: try again later"
    assert "10.20.0.7" not in json.dumps(reply.body)
    records = dict(world.audit.events)  # the denial, and the mint given up on (its jti)
    assert records["deny"]["reason"] == "no_signing_quorum"
    assert "10.20.0.7:7001 unreachable" in str(records["deny"]["internal"])
    assert "10.20.0.7:7001 unreachable" in str(records["mint_abandoned"]["why"])


def denied(response: CheckResponse) -> tuple[int, dict[str, object]]:
    assert response.status.code != 0
    return response.denied_response.status.code, json.loads(response.denied_response.body)
