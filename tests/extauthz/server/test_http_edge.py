"""The HTTP edge on a real aiohttp server (127.0.0.1, port 0) in front of a fake backend.

Every request goes over a socket through `aiohttp.ClientSession`; the backend is a plain object
implementing `HttpBackend`, so these tests need no signers, no policy and no OIDC issuer.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from multidict import CIMultiDict
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter

from extauthz.config import GatewaySettings
from extauthz.model import Evidence, Grant, Identity, IdentityKind, Route
from extauthz.policy import AuthzRequest
from extauthz.server.decision import Allow, Decision, Deny
from extauthz.server.http_edge import (
    HttpSettings,
    build_app,
    parse_listen,
    revocation_floor_seconds,
    start_app,
)
from extauthz.server.limits import Revocations
from extauthz.server.mint import Minter, MintSettings
from extauthz.server.own_tokens import LEEWAY_SECONDS, OwnTokenVerifier
from extauthz.server.token_exchange import (
    GRANT_TYPE_TOKEN_EXCHANGE,
    TOKEN_TYPE_ACCESS_TOKEN,
    TOKEN_TYPE_ID_TOKEN,
    TOKEN_TYPE_JWT,
)
from extauthz.server.tokencache import MintedToken
from signer.token import kid_for
from tests.extauthz.configs import serving_env
from tests.helpers import ManualClock, Run

START = 1_900_000_000.0
ISSUER = "https://keymint.test"
DEPLOY = "https://deploy.example.com"
ADMIN_TOKEN = "admin-secret-0123456789"
SUBJECT_TOKEN = "eyJhbGciOiJSUzI1NiJ9.c3ViamVjdC10b2tlbi1ib2R5.c2lnbmF0dXJl"
MINTED = "eyJhbGciOiJFZERTQSJ9.bWludGVk.c2ln"
ERROR_DESCRIPTION = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]*")  # RFC 6749 section 5.2


def raw_public_key(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


IDENTITY = Identity(
    kind=IdentityKind.GITHUB_ACTIONS,
    subject="repo:octo-org/octo-repo:environment:prod",
    issuer="https://token.actions.githubusercontent.com",
    credential_hash="cd" * 32,
    expires_at=int(START) + 3600,
    evidence=Evidence(kind="oidc_token", value=SUBJECT_TOKEN.encode()),
)


def allow(lifetime: int = 600, scopes: tuple[str, ...] = ("deploy:read", "deploy:write")) -> Allow:
    token = MintedToken(
        token=MINTED,
        jti="jti-1",
        subject=IDENTITY.subject,
        audience=DEPLOY,
        scopes=scopes,
        issued_at=int(START),
        expires_at=int(START) + lifetime,
        signers=(1, 2),
    )
    return Allow(IDENTITY, Grant(DEPLOY, scopes, lifetime, "deploy-main/deployer"), token, False)


@dataclass
class FakeBackend:
    """An HttpBackend answering what the test puts in `decision`, recording what it was asked."""

    keys: list[bytes]
    clock: ManualClock
    issuer: str = ISSUER
    admin_token_sha256: str | None = hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest()
    quorum: bool = True
    decision: Decision | Exception = field(default_factory=allow)
    exchanges: list[tuple[str, str | None, tuple[str, ...]]] = field(default_factory=list)
    audited: list[tuple[str, dict[str, object]]] = field(default_factory=list)
    revocations: Revocations = field(init=False)
    endorsements: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.revocations = Revocations(clock=self.clock)

    def ready(self) -> bool:
        return self.quorum

    def readiness(self) -> Mapping[str, object]:
        if self.quorum:
            return {"status": "ready"}
        return {"status": "not_ready", "reason": "no_signing_quorum"}

    def jwks_keys(self) -> list[bytes]:
        return list(self.keys)

    def key_endorsements(self) -> Mapping[str, object]:
        return self.endorsements

    async def exchange(
        self, subject_token: str, audience: str | None, scopes: tuple[str, ...]
    ) -> Decision:
        self.exchanges.append((subject_token, audience, scopes))
        if isinstance(self.decision, Exception):
            raise self.decision
        return self.decision

    async def audit(self, event: str, data: Mapping[str, object]) -> None:
        self.audited.append((event, dict(data)))


@dataclass(frozen=True)
class Reply:
    status: int
    headers: CIMultiDict[str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Edge:
    """A running edge and a client for it; every call runs to completion on the test's loop."""

    def __init__(self, run: Run, backend: FakeBackend, base: str, session: aiohttp.ClientSession):
        self.run = run
        self.backend = backend
        self.base = base
        self._session = session

    def request(self, method: str, path: str, **kwargs: Any) -> Reply:
        async def call() -> Reply:
            async with self._session.request(method, self.base + path, **kwargs) as response:
                return Reply(response.status, CIMultiDict(response.headers), await response.read())

        return self.run(call())

    def get(self, path: str, headers: Mapping[str, str] | None = None) -> Reply:
        return self.request("GET", path, headers=headers)

    def token(self, form: Mapping[str, str] | list[tuple[str, str]] | None = None) -> Reply:
        return self.request("POST", "/token", data=exchange_form() if form is None else form)

    def admin(
        self,
        method: str,
        path: str,
        token: str | None = ADMIN_TOKEN,
        content_type: str | None = None,
        **kwargs: Any,
    ) -> Reply:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        return self.request(method, path, headers=headers, **kwargs)


def exchange_form(**overrides: str | None) -> list[tuple[str, str]]:
    form: dict[str, str | None] = {
        "grant_type": GRANT_TYPE_TOKEN_EXCHANGE,
        "subject_token": SUBJECT_TOKEN,
        "subject_token_type": TOKEN_TYPE_JWT,
        "audience": DEPLOY,
        "scope": "deploy:read deploy:write",
        **overrides,
    }
    return [(name, value) for name, value in form.items() if value is not None]


@pytest.fixture
def run() -> Iterator[Run]:
    with asyncio.Runner() as runner:
        yield runner.run


@pytest.fixture
def signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def backend(signing_key: Ed25519PrivateKey) -> FakeBackend:
    return FakeBackend(keys=[raw_public_key(signing_key)], clock=ManualClock(START))


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def settings() -> HttpSettings:
    return HttpSettings()


@pytest.fixture
def edge(
    run: Run, backend: FakeBackend, registry: CollectorRegistry, settings: HttpSettings
) -> Iterator[Edge]:
    app = build_app(backend, settings=settings, clock=backend.clock, registry=registry)
    runner, port = run(start_app(app, "127.0.0.1:0"))

    async def open_session() -> aiohttp.ClientSession:
        return aiohttp.ClientSession()

    session = run(open_session())
    yield Edge(run, backend, f"http://127.0.0.1:{port}", session)
    run(session.close())
    run(runner.cleanup())


# --- JWKS -----------------------------------------------------------------------------------------


def test_jwks_publishes_the_group_key_as_an_okp_jwk(edge: Edge) -> None:
    reply = edge.get("/.well-known/jwks.json")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/json")
    (jwk,) = reply.json()["keys"]
    key = edge.backend.keys[0]
    assert jwk == {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": jwt.utils.base64url_encode(key).decode(),
        "kid": kid_for(key),
        "alg": "EdDSA",
        "use": "sig",
    }


def test_jwks_is_cacheable_with_a_strong_etag(edge: Edge) -> None:
    reply = edge.get("/.well-known/jwks.json")
    assert reply.headers["Cache-Control"] == "public, max-age=300"
    etag = reply.headers["ETag"]
    assert re.fullmatch(r'"[0-9a-f]{32}"', etag)
    assert etag.strip('"') == hashlib.sha256(reply.body).hexdigest()[:32]
    assert edge.get("/.well-known/jwks.json").headers["ETag"] == etag  # stable


@pytest.mark.parametrize("if_none_match", ["{etag}", "W/{etag}", '"other", {etag}', "*"])
def test_jwks_answers_304_when_the_client_has_it(edge: Edge, if_none_match: str) -> None:
    etag = edge.get("/.well-known/jwks.json").headers["ETag"]
    reply = edge.get("/.well-known/jwks.json", {"If-None-Match": if_none_match.format(etag=etag)})
    assert reply.status == 304
    assert reply.body == b""
    assert reply.headers["ETag"] == etag
    assert reply.headers["Cache-Control"] == "public, max-age=300"


def test_jwks_answers_200_for_a_stale_etag(edge: Edge) -> None:
    reply = edge.get("/.well-known/jwks.json", {"If-None-Match": '"0123456789abcdef"'})
    assert reply.status == 200
    assert reply.json()["keys"]


def test_a_new_key_changes_the_etag_and_both_keys_are_published(edge: Edge) -> None:
    before = edge.get("/.well-known/jwks.json").headers["ETag"]
    edge.backend.keys.append(raw_public_key(Ed25519PrivateKey.generate()))
    reply = edge.get("/.well-known/jwks.json", {"If-None-Match": before})
    assert reply.status == 200
    assert reply.headers["ETag"] != before
    assert [k["kid"] for k in reply.json()["keys"]] == [kid_for(k) for k in edge.backend.keys]


@pytest.mark.parametrize("settings", [HttpSettings(jwks_max_age_seconds=60)])
def test_jwks_max_age_is_configurable(edge: Edge) -> None:
    assert edge.get("/.well-known/jwks.json").headers["Cache-Control"] == "public, max-age=60"


def test_a_token_verifies_against_the_published_jwks(
    edge: Edge, signing_key: Ed25519PrivateKey
) -> None:
    """What an upstream does: fetch the JWKS, pick the key by kid, verify with PyJWT."""
    now = int(time.time())  # PyJWT checks exp and iat against the real clock
    claims = {"iss": ISSUER, "sub": "repo:o/r", "aud": DEPLOY, "iat": now, "exp": now + 300}
    kid = kid_for(raw_public_key(signing_key))
    token = jwt.encode(claims, signing_key, algorithm="EdDSA", headers={"kid": kid})

    keys = {k["kid"]: k for k in edge.get("/.well-known/jwks.json").json()["keys"]}
    key = jwt.PyJWK(keys[jwt.get_unverified_header(token)["kid"]])
    assert jwt.decode(token, key, algorithms=["EdDSA"], audience=DEPLOY, issuer=ISSUER) == claims

    forged = jwt.encode(claims, Ed25519PrivateKey.generate(), "EdDSA", headers={"kid": kid})
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(forged, key, algorithms=["EdDSA"], audience=DEPLOY, issuer=ISSUER)


def test_the_endorsements_document_is_served_and_cacheable_like_the_jwks(edge: Edge) -> None:
    edge.backend.endorsements = {
        "issuer": ISSUER,
        "roots": ["root-kid"],
        "endorsements": ["a.b.c"],
        "keys": ["root-kid"],
    }
    reply = edge.get("/.well-known/keymint-endorsements.json")
    assert reply.status == 200
    assert reply.json() == edge.backend.endorsements
    assert reply.headers["Cache-Control"] == "public, max-age=300"
    etag = reply.headers["ETag"]
    assert etag.strip('"') == hashlib.sha256(reply.body).hexdigest()[:32]
    again = edge.get("/.well-known/keymint-endorsements.json", {"If-None-Match": etag})
    assert again.status == 304


# --- discovery, health, metrics -------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"]
)
def test_metadata_has_every_required_member_and_says_only_what_is_true(
    edge: Edge, path: str
) -> None:
    reply = edge.get(path)
    assert reply.status == 200
    document = reply.json()
    assert document == {
        "issuer": ISSUER,
        "authorization_endpoint": f"{ISSUER}/authorize",
        "token_endpoint": f"{ISSUER}/token",
        "jwks_uri": f"{ISSUER}/.well-known/jwks.json",
        "response_types_supported": [],
        "grant_types_supported": [GRANT_TYPE_TOKEN_EXCHANGE],
        "token_endpoint_auth_methods_supported": ["none"],
        "subject_token_types_supported": [
            "urn:ietf:params:oauth:token-type:id_token",
            "urn:ietf:params:oauth:token-type:jwt",
        ],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["EdDSA"],
        "request_uri_parameter_supported": False,
        "request_parameter_supported": False,
        "claims_parameter_supported": False,
    }
    # RFC 8414 section 2 and OpenID Connect Discovery 1.0 section 3: every REQUIRED member.
    rfc8414 = {"issuer", "authorization_endpoint", "token_endpoint", "response_types_supported"}
    oidc = rfc8414 | {
        "jwks_uri",
        "subject_types_supported",
        "id_token_signing_alg_values_supported",
    }
    assert oidc <= set(document)
    assert reply.headers["Cache-Control"] == "public, max-age=300"
    assert reply.headers["ETag"]


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_the_authorization_endpoint_supports_no_response_type(edge: Edge, method: str) -> None:
    query = "?response_type=code&client_id=x&redirect_uri=https%3A%2F%2Fevil.example%2Fcb"
    reply = edge.request(method, "/authorize" + query)
    assert reply.status == 400  # never a redirect to a URI nobody registered
    assert reply.json()["error"] == "unsupported_response_type"
    assert reply.headers["Cache-Control"] == "no-store"
    assert "Location" not in reply.headers


def test_discovery_keeps_the_issuer_exact_and_joins_paths_cleanly(edge: Edge) -> None:
    edge.backend.issuer = "https://keymint.test/tenant/"
    document = edge.get("/.well-known/openid-configuration").json()
    assert document["issuer"] == "https://keymint.test/tenant/"  # must equal `iss` byte for byte
    assert document["jwks_uri"] == "https://keymint.test/tenant/.well-known/jwks.json"


@pytest.mark.parametrize("quorum", [True, False])
def test_healthz_answers_while_the_process_runs(edge: Edge, quorum: bool) -> None:
    edge.backend.quorum = quorum
    reply = edge.get("/healthz")
    assert (reply.status, reply.json()) == (200, {"status": "ok"})


def test_readyz_is_200_with_a_signing_quorum(edge: Edge) -> None:
    reply = edge.get("/readyz")
    assert (reply.status, reply.json()) == (200, {"status": "ready"})


def test_readyz_is_503_with_a_reason_without_a_quorum(edge: Edge) -> None:
    edge.backend.quorum = False
    reply = edge.get("/readyz")
    assert reply.status == 503
    assert reply.json()["status"] == "not_ready"
    assert reply.json()["reason"] == "no_signing_quorum"
    assert reply.headers["Cache-Control"] == "no-store"


def test_metrics_are_prometheus_text(edge: Edge, registry: CollectorRegistry) -> None:
    Counter("edge_test_events", "events", registry=registry).inc(3)
    reply = edge.get("/metrics")
    assert reply.status == 200
    assert reply.headers["Content-Type"] == CONTENT_TYPE_LATEST
    assert "edge_test_events_total 3.0" in reply.body.decode()


def test_metrics_default_to_the_process_registry(run: Run, backend: FakeBackend) -> None:
    async def scrape() -> str:
        runner, port = await start_app(build_app(backend), "127.0.0.1:0")
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{port}/metrics") as response,
            ):
                return await response.text()
        finally:
            await runner.cleanup()

    assert "keymint_decisions_total" in run(scrape())


# --- /token: success ------------------------------------------------------------------------------


def test_token_exchange_answers_the_rfc_8693_response(edge: Edge) -> None:
    reply = edge.token()
    assert reply.status == 200
    assert reply.json() == {
        "access_token": MINTED,
        "issued_token_type": TOKEN_TYPE_JWT,
        "token_type": "Bearer",
        "expires_in": 600,
        "scope": "deploy:read deploy:write",
    }
    assert reply.headers["Cache-Control"] == "no-store"
    assert reply.headers["Pragma"] == "no-cache"
    assert edge.backend.exchanges == [(SUBJECT_TOKEN, DEPLOY, ("deploy:read", "deploy:write"))]


def test_expires_in_counts_from_now(edge: Edge) -> None:
    edge.backend.clock.advance(100)  # a cached token, minted 100 s ago
    assert edge.token().json()["expires_in"] == 500


@pytest.mark.parametrize(
    "overrides",
    [
        {"subject_token_type": TOKEN_TYPE_ID_TOKEN},
        {"requested_token_type": TOKEN_TYPE_ACCESS_TOKEN},
        {"requested_token_type": TOKEN_TYPE_JWT},
        {"scope": ""},  # RFC 6749 section 3.1: a parameter without a value is omitted
    ],
)
def test_token_exchange_accepts_the_supported_variants(
    edge: Edge, overrides: dict[str, str]
) -> None:
    assert edge.token(exchange_form(**overrides)).status == 200


def test_audience_and_scope_are_optional(edge: Edge) -> None:
    assert edge.token(exchange_form(audience=None, scope=None)).status == 200
    assert edge.backend.exchanges == [(SUBJECT_TOKEN, None, ())]


def test_repeated_scopes_are_asked_once(edge: Edge) -> None:
    edge.token(exchange_form(scope="deploy:read deploy:write deploy:read"))
    assert edge.backend.exchanges[0][2] == ("deploy:read", "deploy:write")


def test_form_content_type_may_name_a_charset(edge: Edge) -> None:
    body = urlencode(exchange_form()).encode()
    reply = edge.request(
        "POST",
        "/token",
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=UTF-8"},
    )
    assert reply.status == 200


# --- /token: refused before the pipeline ----------------------------------------------------------


def assert_oauth_error(reply: Reply, status: int, error: str, mentions: str = "") -> None:
    assert reply.status == status, reply.body
    body = reply.json()
    assert set(body) == {"error", "error_description"}
    assert body["error"] == error
    assert mentions in body["error_description"]
    assert ERROR_DESCRIPTION.fullmatch(body["error_description"])
    assert SUBJECT_TOKEN not in reply.body.decode()
    assert reply.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(
    ("form", "error", "mentions"),
    [
        (exchange_form(grant_type=None), "invalid_request", "grant_type is required"),
        (exchange_form(grant_type="client_credentials"), "unsupported_grant_type", "only"),
        (exchange_form(subject_token=None), "invalid_request", "subject_token is required"),
        (exchange_form(subject_token_type=None), "invalid_request", "subject_token_type is"),
        (
            exchange_form(subject_token_type="urn:ietf:params:oauth:token-type:saml2"),
            "invalid_request",
            "subject_token_type",
        ),
        (
            exchange_form(requested_token_type="urn:ietf:params:oauth:token-type:refresh_token"),
            "invalid_request",
            "requested_token_type",
        ),
        (
            [
                *exchange_form(),
                ("actor_token", SUBJECT_TOKEN),
                ("actor_token_type", TOKEN_TYPE_JWT),
            ],
            "invalid_request",
            "delegation",
        ),
        ([*exchange_form(), ("actor_token_type", TOKEN_TYPE_JWT)], "invalid_request", "actor"),
        ([*exchange_form(), ("resource", "https://deploy.example.com/api")], "invalid_target", ""),
        ([*exchange_form(), ("audience", "https://other.example.com")], "invalid_target", "one"),
        ([*exchange_form(), ("subject_token", SUBJECT_TOKEN)], "invalid_request", "repeated"),
        ([*exchange_form(), ("grant_type", GRANT_TYPE_TOKEN_EXCHANGE)], "invalid_request", "rep"),
        ([*exchange_form(), ("scope", "deploy:read")], "invalid_request", "scope is repeated"),
        (exchange_form(scope="deploy:read  deploy:write"), "invalid_scope", "scope"),
        (exchange_form(scope='deploy:"read"'), "invalid_scope", "scope"),
        (exchange_form(scope="deploy:réad"), "invalid_scope", "scope"),
    ],
)
def test_malformed_exchanges_are_refused_before_the_pipeline(
    edge: Edge, form: list[tuple[str, str]], error: str, mentions: str
) -> None:
    assert_oauth_error(edge.token(form), 400, error, mentions)
    assert edge.backend.exchanges == []


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", json.dumps(dict(exchange_form())).encode()),
        ("text/plain", urlencode(exchange_form()).encode()),
        ("multipart/form-data; boundary=x", b"--x--"),
        ("application/octet-stream", urlencode(exchange_form()).encode()),
    ],
)
def test_token_wants_a_urlencoded_form(edge: Edge, content_type: str, body: bytes) -> None:
    reply = edge.request("POST", "/token", data=body, headers={"Content-Type": content_type})
    assert_oauth_error(reply, 400, "invalid_request", "application/x-www-form-urlencoded")
    assert edge.backend.exchanges == []


def test_parameters_in_the_url_are_refused(edge: Edge) -> None:
    reply = edge.request(
        "POST", f"/token?subject_token={SUBJECT_TOKEN}", data=exchange_form(subject_token=None)
    )
    assert_oauth_error(reply, 400, "invalid_request", "form body")
    assert edge.backend.exchanges == []


def test_an_oversized_body_is_refused(edge: Edge) -> None:
    form = exchange_form(subject_token="a" * 16 * 1024)
    assert_oauth_error(edge.token(form), 413, "invalid_request", "16384 bytes")
    assert edge.backend.exchanges == []


def test_an_oversized_chunked_body_is_refused_without_reading_it_all(edge: Edge) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"grant_type=" + GRANT_TYPE_TOKEN_EXCHANGE.encode() + b"&subject_token="
        for _ in range(64):  # 64 KiB, with no Content-Length to check up front
            yield b"a" * 1024

    reply = edge.request(
        "POST",
        "/token",
        data=chunks(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_oauth_error(reply, 413, "invalid_request", "bytes")


def test_a_body_that_is_not_utf8_is_refused(edge: Edge) -> None:
    reply = edge.request(
        "POST",
        "/token",
        data=b"grant_type=%ff%fe",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_oauth_error(reply, 400, "invalid_request", "UTF-8")


def test_too_many_fields_are_refused(edge: Edge) -> None:
    assert_oauth_error(edge.token([("x", "1")] * 40), 400, "invalid_request", "fields")


def test_token_is_post_only(edge: Edge) -> None:
    assert edge.get("/token").status == 405


# --- /token: the pipeline's decision, mapped ------------------------------------------------------


@pytest.mark.parametrize(
    ("deny", "status", "error"),
    [
        (
            Deny.unauthenticated("token_expired", "token sha256:abc: expired"),
            400,
            "invalid_request",
        ),
        (
            Deny.unauthenticated("bad_signature", "signature does not verify"),
            400,
            "invalid_request",
        ),
        (Deny.unauthenticated("unknown_issuer", "not a configured issuer"), 400, "invalid_request"),
        (Deny.unauthenticated("credential_expiring", "expires in 5s"), 400, "invalid_request"),
        (Deny.forbidden("unknown_audience", "not in the policy", IDENTITY), 400, "invalid_target"),
        (Deny.forbidden("audience_not_allowed", "not for you", IDENTITY), 400, "invalid_target"),
        (Deny.forbidden("scope_not_allowed", "does not grant x", IDENTITY), 400, "invalid_scope"),
        (Deny.forbidden("no_scopes", "none granted", IDENTITY), 400, "invalid_scope"),
        (Deny.forbidden("no_matching_binding", "no binding", IDENTITY), 400, "invalid_request"),
        (Deny.forbidden("no_audience", "none requested", IDENTITY), 400, "invalid_request"),
        (Deny.forbidden("route_not_allowed", "not this route", IDENTITY), 400, "invalid_request"),
        (Deny.forbidden("rego_denied", "Rego said no", IDENTITY), 400, "invalid_request"),
        (Deny.forbidden("subject_revoked", "revoked", IDENTITY), 400, "invalid_request"),
        (
            Deny.forbidden("signer_refused", "signers refused: scope", IDENTITY),
            400,
            "invalid_request",
        ),
        (Deny(418, "new_reason", "a status nobody mapped"), 400, "invalid_request"),
    ],
)
def test_client_denials_map_to_oauth_errors(
    edge: Edge, deny: Deny, status: int, error: str
) -> None:
    edge.backend.decision = deny
    reply = edge.token()
    assert_oauth_error(reply, status, error, f"{deny.reason}: {deny.detail}")
    assert "Retry-After" not in reply.headers


def test_rate_limiting_is_429_with_retry_after(edge: Edge) -> None:
    edge.backend.decision = Deny.rate_limited("too many requests", IDENTITY, 7)
    reply = edge.token()
    assert_oauth_error(reply, 429, "temporarily_unavailable", "rate_limited")
    assert reply.headers["Retry-After"] == "7"


def test_no_quorum_is_503_and_keeps_signer_details_private(edge: Edge) -> None:
    detail = "need 2 signers, 1 available: signer 3: connect to 10.0.0.7:7001 refused"
    edge.backend.decision = Deny.unavailable("no_signing_quorum", detail, IDENTITY)
    reply = edge.token()
    assert_oauth_error(reply, 503, "temporarily_unavailable", "no_signing_quorum")
    assert reply.headers["Retry-After"] == "1"
    assert "10.0.0.7" not in reply.body.decode()


@pytest.mark.parametrize(
    "deny",
    [
        Deny.unavailable("internal_error", "internal error"),
        Deny.forbidden("rego_error", "rego: undefined function at line 3", IDENTITY),
    ],
)
def test_server_faults_are_500_server_error(edge: Edge, deny: Deny) -> None:
    edge.backend.decision = deny
    reply = edge.token()
    assert_oauth_error(reply, 500, "server_error", deny.reason)
    assert "line 3" not in reply.body.decode()


def test_a_backend_that_raises_fails_closed(edge: Edge) -> None:
    edge.backend.decision = RuntimeError(f"boom with {SUBJECT_TOKEN}")
    assert_oauth_error(edge.token(), 500, "server_error", "internal_error")


def test_error_descriptions_are_rfc_6749_characters(edge: Edge) -> None:
    edge.backend.decision = Deny.forbidden(
        "no_matching_binding", 'no binding for "repo:ö/r"\\x\n' + "y" * 400, IDENTITY
    )
    description = edge.token().json()["error_description"]
    assert ERROR_DESCRIPTION.fullmatch(description)
    assert len(description) <= 300


# --- admin ----------------------------------------------------------------------------------------


def revoke(edge: Edge, document: object, token: str | None = ADMIN_TOKEN) -> Reply:
    return edge.admin("POST", "/admin/revoke", token, json=document)


def test_admin_endpoints_do_not_exist_without_an_admin_token(edge: Edge) -> None:
    edge.backend.admin_token_sha256 = None
    assert revoke(edge, {"jti": "j", "until": START + 60}).status == 404
    assert edge.admin("GET", "/admin/revocations").status == 404
    assert edge.backend.revocations.snapshot() == {"jtis": {}, "subjects": {}}


@pytest.mark.parametrize("token", [None, "wrong-token", "", ADMIN_TOKEN.upper()])
def test_admin_needs_the_right_bearer_token(edge: Edge, token: str | None) -> None:
    reply = revoke(edge, {"jti": "j", "until": START + 60}, token)
    assert reply.status == 401
    assert reply.headers["WWW-Authenticate"] == 'Bearer realm="keymint-admin"'
    assert edge.admin("GET", "/admin/revocations", token).status == 401
    assert edge.backend.revocations.snapshot() == {"jtis": {}, "subjects": {}}
    assert edge.backend.audited == []


def test_admin_token_must_be_sent_as_bearer(edge: Edge) -> None:
    headers = {"Authorization": f"Basic {ADMIN_TOKEN}"}
    assert edge.request("GET", "/admin/revocations", headers=headers).status == 401


def test_revoking_a_jti_applies_at_once_and_is_audited(edge: Edge) -> None:
    reply = revoke(edge, {"jti": "jti-1", "until": START + 600})
    assert reply.status == 200
    assert reply.json() == {"revoked": {"jti": "jti-1", "until": START + 600}}
    assert edge.backend.revocations.jti_revoked("jti-1")
    assert edge.backend.audited == [("revoke", {"jti": "jti-1", "until": START + 600})]


def test_revoking_a_subject_applies_at_once(edge: Edge) -> None:
    assert revoke(edge, {"subject": IDENTITY.subject, "until": int(START) + 3600}).status == 200
    assert edge.backend.revocations.subject_revoked(IDENTITY.subject)


def test_revocations_lists_what_is_in_force(edge: Edge) -> None:
    revoke(edge, {"jti": "jti-1", "until": START + 600})
    revoke(edge, {"subject": "spiffe://prod.test/ns/web/sa/x", "until": START + 60})
    reply = edge.admin("GET", "/admin/revocations")
    assert reply.status == 200
    assert reply.headers["Cache-Control"] == "no-store"
    assert reply.json() == {
        "jtis": {"jti-1": START + 600},
        "subjects": {"spiffe://prod.test/ns/web/sa/x": START + 60},
    }
    edge.backend.clock.advance(120)
    assert edge.admin("GET", "/admin/revocations").json()["subjects"] == {}


@dataclass(frozen=True)
class Signed:
    signature: bytes
    signers: tuple[int, ...] = (1, 2)


class KeySigner:
    """Signs alone with one key: stands in for the signers' threshold signature."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key

    async def sign(self, message: bytes, **_: object) -> Signed:
        return Signed(self._key.sign(message))


# The gateway's defaults: TOKEN_DEFAULT_TTL_SECONDS 900, KEYMINT_STATE_MAX_STALENESS_SECONDS 5.
GATEWAY_FLOOR = revocation_floor_seconds(900, 5.0)


@pytest.mark.parametrize("settings", [HttpSettings(min_revocation_seconds=GATEWAY_FLOOR)])
@pytest.mark.parametrize("kind", ["jti", "subject"])
def test_a_short_until_is_raised_so_the_revocation_outlives_the_longest_token(
    edge: Edge, signing_key: Ed25519PrivateKey, kind: str
) -> None:
    clock = edge.backend.clock
    public = raw_public_key(signing_key)
    # The longest-lived token keymint can mint now: a grant asking for a day gets the default TTL.
    minter = Minter(
        settings=MintSettings(issuer=ISSUER),
        signer=KeySigner(signing_key),
        group_public_key=lambda: public,
        clock=clock,
    )
    grant = Grant(DEPLOY, ("deploy:read",), 86_400, "deploy-main/deployer")
    request = AuthzRequest(IDENTITY, Route("deploy.example.com", "/", "POST"))
    token, _ = edge.run(minter.mint(request, grant, "0" * 64))
    assert token.expires_at == START + 900
    value = token.jti if kind == "jti" else token.subject

    def revoked() -> bool:
        revocations = edge.backend.revocations
        return (
            revocations.jti_revoked(value) if kind == "jti" else revocations.subject_revoked(value)
        )

    # Revoked until a minute from now: kept longer, and the answer says until when.
    reply = revoke(edge, {kind: value, "until": START + 60})
    assert reply.status == 200
    kept = reply.json()["revoked"]["until"]
    assert kept == START + GATEWAY_FLOOR
    assert edge.admin("GET", "/admin/revocations").json()[f"{kind}s"] == {value: kept}
    assert edge.backend.audited == [("revoke", {kind: value, "until": kept})]
    # A later `until` is kept as sent.
    assert revoke(edge, {kind: "other", "until": START + 86_400}).json()["revoked"]["until"] == (
        START + 86_400
    )
    # At the last second keymint still takes the token back (its own tokens are accepted up to
    # LEEWAY_SECONDS past `exp`), the revocation still holds.
    clock.now = token.expires_at + LEEWAY_SECONDS - 1
    verifier = OwnTokenVerifier(issuer=ISSUER, group_keys=lambda: [public], clock=clock)
    assert verifier.verify(token.token, public, DEPLOY, None)["jti"] == token.jti
    assert revoked()
    # It is not kept for ever: at the time it names, it lapses.
    clock.now = kept
    assert not revoked()


def test_the_gateway_keeps_revocations_past_its_longest_token_and_staleness_bound(
    tmp_path: Path,
) -> None:
    env = {
        **serving_env(tmp_path),
        "TOKEN_DEFAULT_TTL_SECONDS": "300",
        "KEYMINT_STATE_MAX_STALENESS_SECONDS": "2",
    }
    settings = HttpSettings.for_gateway(GatewaySettings.from_env(env))
    assert settings.min_revocation_seconds == 300 + 2 + LEEWAY_SECONDS


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ([], "body"),
        ("jti-1", "body"),
        ({"until": START + 60}, "jti"),
        ({"jti": "a", "subject": "b", "until": START + 60}, "jti"),
        ({"jti": "", "until": START + 60}, "jti"),
        ({"jti": 42, "until": START + 60}, "jti"),
        ({"subject": "a\nb", "until": START + 60}, "subject"),
        ({"subject": "s" * 1025, "until": START + 60}, "subject"),
        ({"jti": "a"}, "until"),
        ({"jti": "a", "until": "tomorrow"}, "until"),
        ({"jti": "a", "until": True}, "until"),
        ({"jti": "a", "until": START}, "until"),
        ({"jti": "a", "until": START - 1}, "until"),
        ({"jti": "a", "until": START + 60, "reason": "leaked"}, "reason"),
    ],
)
def test_revoke_names_the_field_that_is_wrong(edge: Edge, document: object, field: str) -> None:
    reply = revoke(edge, document)
    assert reply.status == 400
    assert reply.json()["error"] == "invalid_request"
    assert reply.json()["field"] == field
    assert edge.backend.revocations.snapshot() == {"jtis": {}, "subjects": {}}


@pytest.mark.parametrize(
    ("body", "content_type", "status", "field"),
    [
        (b"{not json", "application/json", 400, "body"),
        (b'{"jti": "a", "until": NaN}', "application/json", 400, "body"),
        (b'{"jti": "a", "until": Infinity}', "application/json", 400, "body"),
        (b"\xff\xfe", "application/json", 400, "body"),
        (b'{"jti": "a", "until": 1900000060}', "text/plain", 400, "content-type"),
        (b'{"jti": "' + b"a" * 17000 + b'", "until": 1}', "application/json", 413, "body"),
    ],
)
def test_revoke_refuses_bodies_it_cannot_read(
    edge: Edge, body: bytes, content_type: str, status: int, field: str
) -> None:
    reply = edge.admin("POST", "/admin/revoke", content_type=content_type, data=body)
    assert reply.status == status
    assert reply.json()["field"] == field


# --- logs and addresses ---------------------------------------------------------------------------


def test_access_log_carries_no_secret(edge: Edge, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    edge.token()
    edge.request("POST", f"/token?subject_token={SUBJECT_TOKEN}x", data=exchange_form())
    revoke(edge, {"jti": "jti-1", "until": START + 600})
    revoke(edge, {"jti": "jti-1", "until": START + 600}, "wrong-admin-token")

    async def settle() -> None:  # aiohttp writes the access line after the response is sent
        for _ in range(100):
            if sum(r.name == "aiohttp.access" for r in caplog.records) >= 4:
                return
            await asyncio.sleep(0.01)

    edge.run(settle())
    access = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert len(access) == 4
    assert any("POST /token 200" in line for line in access)
    assert any("POST /admin/revoke 401" in line for line in access)
    for secret in (SUBJECT_TOKEN, ADMIN_TOKEN, "wrong-admin-token", MINTED):
        assert secret not in caplog.text


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("[::1]:0", ("::1", 0)),
        ("0.0.0.0:1", ("0.0.0.0", 1)),
    ],
)
def test_parse_listen(listen: str, expected: tuple[str, int]) -> None:
    assert parse_listen(listen) == expected


@pytest.mark.parametrize(
    ("listen", "says"),
    [
        ("8080", "'8080' is not HOST:PORT"),
        (":8080", "':8080' is not HOST:PORT"),
        ("::1:8080", "is not HOST:PORT (an IPv6 host in brackets"),
        ("host:", "port '' is not a number"),
        ("host:http", "port 'http' is not a number"),
        ("host:70000", "port 70000 is not between 0 and 65535"),
    ],
)
def test_parse_listen_refuses_what_is_not_host_port(listen: str, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        parse_listen(listen)
