"""The HTTP edge: JWKS and endorsements, metadata, RFC 8693 `/token`, health, metrics, admin.

Thin by design, like the gRPC edge, and on the same event loop. Handlers see the gateway only
through `HttpBackend`, so tests run them against a fake; `PipelineBackend` is the real one. The
`/token` form and its answers (and the error mapping table) live in `token_exchange`, without I/O.

Metadata: `/.well-known/oauth-authorization-server` (RFC 8414) and
`/.well-known/openid-configuration` (OpenID Connect Discovery 1.0) serve one document with every
member either specification requires, and only what is true: the token endpoint takes the
token-exchange grant from public clients (`none`), for the subject token types in
`subject_token_types_supported` (a keymint member: RFC 8693 registers none). keymint has no
authorization endpoint to speak of: `/authorize` exists because both specifications require one,
and answers every request `unsupported_response_type`, so `response_types_supported` is empty.
OIDC Discovery asks `id_token_signing_alg_values_supported` to include RS256; keymint signs
nothing but EdDSA (and issues no ID token), so the list says EdDSA only.

Keys: the JWKS serves only keys endorsed from the pinned trust root (`extauthz.server.keyring`), and
`/.well-known/keymint-endorsements.json` serves the root kids and the endorsement chain, so a
verifier that pins the root trusts no key on this edge's word (`extauthz pin-keys`). Rotation:
caches may keep the JWKS for `jwks_max_age_seconds`, so a new group key must be in `jwks_keys()` at
least that long before it signs, and an old one stays until its last token expires.

Secrets: the access log writes peer, method, raw path (never the query), status, size and time. No
header, form or JSON body is logged here. The admin token is held only as its SHA-256 hex digest and
compared in constant time. A revocation applies to this replica's `Revocations` at once and is
stored in the shared state (Redis, or the state directory), from which every replica and worker
applies it; the pipeline re-checks revocations on every hot-cache hit and before serving a cached
token. It is kept until the `until` the operator sends, raised when that comes before the last
token it can affect has expired (`revocation_floor_seconds`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from extauthz.config import GatewaySettings
from extauthz.errors import ExtAuthzError
from extauthz.server.admin_auth import admin_refusal
from extauthz.server.admin_keys import add_key_routes
from extauthz.server.decision import Decision
from extauthz.server.limits import Revocations, StateUnavailable
from extauthz.server.own_tokens import LEEWAY_SECONDS
from extauthz.server.pipeline import AuditWriter, Pipeline
from extauthz.server.token_exchange import (
    GRANT_TYPE_TOKEN_EXCHANGE,
    MAX_BODY_BYTES,
    NO_STORE,
    SUBJECT_TOKEN_TYPES,
    ExchangeAnswer,
    ExchangeError,
    answer_decision,
    body_too_large,
    error_answer,
    parse_exchange,
)
from signer.observability import request_context
from signer.settings import host_port
from signer.token import public_jwk

if TYPE_CHECKING:
    from extauthz.server.gateway import Gateway

log = logging.getLogger(__name__)

JWKS_PATH = "/.well-known/jwks.json"
ENDORSEMENTS_PATH = "/.well-known/keymint-endorsements.json"
DISCOVERY_PATH = "/.well-known/openid-configuration"
AUTHORIZATION_SERVER_PATH = "/.well-known/oauth-authorization-server"  # RFC 8414
TOKEN_PATH = "/token"  # noqa: S105 (a path)
AUTHORIZATION_PATH = "/authorize"
MAX_REVOKED_VALUE = 1024  # a jti is a UUID, a subject a SPIFFE ID or an OIDC `sub`
# On a stop, requests in flight have this long to finish before they are cancelled: inside the
# gateway's own bound (signer.stopping.STOP_DEADLINE_SECONDS), above a new mint's default deadline.
DRAIN_SECONDS = 5.0


class HttpBackend(Protocol):
    """What the HTTP edge needs from a gateway."""

    @property
    def issuer(self) -> str: ...

    @property
    def admin_token_sha256(self) -> str | None: ...  # None: the admin endpoints do not exist

    @property
    def revocations(self) -> Revocations: ...

    def ready(self) -> bool: ...  # a signing quorum answers

    # /readyz's document: "status" (ready or not_ready), and why not ("reason", a stable code)
    def readiness(self) -> Mapping[str, object]: ...

    def jwks_keys(self) -> list[bytes]: ...  # group keys that may still verify a live token

    # {"issuer", "roots": [kid], "endorsements": [compact JWS], "keys": [published kid]}
    def key_endorsements(self) -> Mapping[str, object]: ...

    async def exchange(
        self, subject_token: str, audience: str | None, scopes: tuple[str, ...]
    ) -> Decision: ...

    async def audit(self, event: str, data: Mapping[str, object]) -> None: ...


@dataclass(frozen=True, slots=True)
class PipelineBackend:
    """The HttpBackend of a running gateway: its pipeline, its group key, its quorum."""

    pipeline: Pipeline
    issuer: str
    admin_token_sha256: str | None
    group_public_key: Callable[[], bytes]
    quorum_ready: Callable[[], bool]
    audit_log: AuditWriter | None = None
    published_keys: Callable[[], list[bytes]] | None = None  # rotation: active, next, retiring
    endorsements: Callable[[], Mapping[str, object]] | None = None  # the key ring's chain
    report: Callable[[], Mapping[str, object]] | None = None  # extauthz.server.startup.Readiness

    @classmethod
    def from_gateway(cls, gateway: Gateway) -> PipelineBackend:
        return cls(
            pipeline=gateway.pipeline,
            issuer=gateway.settings.issuer,
            admin_token_sha256=gateway.settings.admin_token_sha256,
            group_public_key=lambda: gateway.group_public_key,
            published_keys=gateway.keyring.published_keys,
            endorsements=gateway.keyring.endorsements_document,
            quorum_ready=gateway.ready,
            audit_log=gateway.audit,
            report=gateway.readiness.report,
        )

    @property
    def revocations(self) -> Revocations:
        return self.pipeline.revocations

    def ready(self) -> bool:
        return self.quorum_ready()

    def readiness(self) -> Mapping[str, object]:
        if self.report is not None:
            return self.report()
        if self.ready():
            return {"status": "ready"}
        return {"status": "not_ready", "reason": "no_signing_quorum"}

    def jwks_keys(self) -> list[bytes]:
        if self.published_keys is not None:
            return self.published_keys()
        return [self.group_public_key()]

    def key_endorsements(self) -> Mapping[str, object]:
        if self.endorsements is None:
            return {"issuer": self.issuer, "roots": [], "endorsements": [], "keys": []}
        return self.endorsements()

    async def exchange(
        self, subject_token: str, audience: str | None, scopes: tuple[str, ...]
    ) -> Decision:
        return await self.pipeline.exchange(subject_token, audience, scopes)

    async def audit(self, event: str, data: Mapping[str, object]) -> None:
        if self.audit_log is not None:
            await self.audit_log.append(event, data)


def revocation_floor_seconds(max_token_ttl_seconds: float, max_staleness_seconds: float) -> float:
    """How long after it is made a revocation must be kept to outlive every token it can affect.

    A token minted before the revocation lives at most `max_token_ttl_seconds` (the minter clamps
    every lifetime to TOKEN_DEFAULT_TTL_SECONDS); while the shared state is unreachable, a replica
    that has not heard of the revocation may still mint for its subject until its view goes stale,
    at most `max_staleness_seconds` later; and keymint takes its own tokens back until
    LEEWAY_SECONDS past their `exp` (clock skew), refusing a revoked one only while the
    revocation is held."""
    return max_token_ttl_seconds + max_staleness_seconds + LEEWAY_SECONDS


@dataclass(frozen=True, slots=True)
class HttpSettings:
    jwks_max_age_seconds: int = 300
    max_body_bytes: int = MAX_BODY_BYTES
    # A revocation is kept at least this long after it is made, whatever its `until`
    # (`revocation_floor_seconds`); 0 keeps `until` as sent.
    min_revocation_seconds: float = 0.0

    @classmethod
    def for_gateway(cls, settings: GatewaySettings) -> HttpSettings:
        floor = revocation_floor_seconds(
            settings.default_ttl_seconds, settings.state_max_staleness_seconds
        )
        return cls(min_revocation_seconds=floor)


class RedactingAccessLogger(AbstractAccessLogger):
    """One line per request with nothing secret in it: no query, no header, no body."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            "%s %s %s %d %d %.1fms",
            request.remote,
            request.method,
            request.rel_url.raw_path[:200],  # percent-encoded: no control characters to forge
            response.status,
            response.body_length,
            time * 1000,
        )


class AdminRequestError(ExtAuthzError):
    """An admin request that cannot be carried out: `field` names the part that is wrong."""

    def __init__(self, field: str, problem: str, *, status: int = 400) -> None:
        self.field = field
        self.problem = problem
        self.status = status
        super().__init__(f"{field}: {problem}")


@dataclass(frozen=True, slots=True)
class Revocation:
    kind: str  # "jti" or "subject"
    value: str
    until: float


def parse_revocation(document: object, now: float, *, min_seconds: float = 0.0) -> Revocation:
    """{"jti": ..., "until": unix} or {"subject": ..., "until": unix}, `until` in the future; the
    revocation holds until then, or `min_seconds` from `now` if that is later."""
    if not isinstance(document, dict):
        raise AdminRequestError("body", "must be a JSON object")
    for name in document:
        if name not in ("jti", "subject", "until"):
            raise AdminRequestError(str(name)[:64], "is not a known field")
    kinds = [kind for kind in ("jti", "subject") if kind in document]
    if len(kinds) != 1:
        raise AdminRequestError("jti", "give exactly one of jti or subject")
    kind = kinds[0]
    value = document[kind]
    if not isinstance(value, str) or not value or not value.isprintable():
        raise AdminRequestError(kind, "must be a non-empty printable string")
    if len(value) > MAX_REVOKED_VALUE:
        raise AdminRequestError(kind, f"is longer than {MAX_REVOKED_VALUE} characters")
    until = document.get("until")
    if isinstance(until, bool) or not isinstance(until, int | float):
        raise AdminRequestError("until", "must be a unix time in seconds")
    if not math.isfinite(until) or until <= now:
        raise AdminRequestError("until", "must be in the future")
    return Revocation(kind, value, max(float(until), now + min_seconds))


async def read_body(request: web.Request, limit: int) -> bytes | None:
    """The request body, or None when it is over `limit` bytes (read no further than that)."""
    if request.content_length is not None and request.content_length > limit:
        return None
    body = bytearray()
    async for chunk in request.content.iter_any():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def _json(status: int, document: object, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(document, status=status, headers=headers)


def _not_ready() -> web.Response:
    document = {"error": "not_ready", "error_description": "the key ring is not loaded yet"}
    return _json(503, document, {"Cache-Control": "no-store", "Retry-After": "1"})


def _exchange_response(answer: ExchangeAnswer) -> web.Response:
    return _json(answer.status, answer.body, answer.headers)


class _Handlers:
    def __init__(
        self,
        backend: HttpBackend,
        settings: HttpSettings,
        clock: Callable[[], float],
        registry: CollectorRegistry,
    ) -> None:
        self._backend = backend
        self._settings = settings
        self._clock = clock
        self._registry = registry

    # --- public documents -------------------------------------------------------------------------

    async def jwks(self, request: web.Request) -> web.Response:
        keys = [public_jwk(key) for key in self._backend.jwks_keys()]
        if not keys:  # starting: an empty set must not be cached by any verifier
            return _not_ready()
        return self._cacheable(request, {"keys": keys})

    async def endorsements(self, request: web.Request) -> web.Response:
        if not self._backend.jwks_keys():
            return _not_ready()
        return self._cacheable(request, self._backend.key_endorsements())

    async def discovery(self, request: web.Request) -> web.Response:
        return self._cacheable(request, metadata(self._backend.issuer))

    async def authorize(self, request: web.Request) -> web.Response:
        # No redirect: nothing here knows the client's redirect URI, so the error is the answer.
        document = {
            "error": "unsupported_response_type",
            "error_description": "keymint issues tokens only by token exchange at /token (RFC "
            "8693); it has no authorization endpoint",
        }
        return _json(400, document, NO_STORE)

    def _cacheable(self, request: web.Request, document: object) -> web.Response:
        body = json.dumps(document, separators=(",", ":"), sort_keys=True).encode()
        etag = hashlib.sha256(body).hexdigest()[:32]  # strong: it changes exactly with the bytes
        headers = {
            "ETag": f'"{etag}"',
            "Cache-Control": f"public, max-age={self._settings.jwks_max_age_seconds}",
        }
        # RFC 9110 section 13.1.2: If-None-Match uses the weak comparison, so W/ still matches.
        if any(tag.value in (etag, "*") for tag in request.if_none_match or ()):
            return web.Response(status=304, headers=headers)
        return web.Response(body=body, content_type="application/json", headers=headers)

    # --- health and metrics -----------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        return _json(200, {"status": "ok"}, {"Cache-Control": "no-store"})

    async def readyz(self, request: web.Request) -> web.Response:
        """200 when ready; else 503 with the reason, and per dependency what it waits for."""
        document = self._backend.readiness()
        status = 200 if document.get("status") == "ready" else 503
        return _json(status, document, {"Cache-Control": "no-store"})

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self._registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    # --- token exchange ---------------------------------------------------------------------------

    async def token(self, request: web.Request) -> web.Response:
        limit = self._settings.max_body_bytes
        try:
            body = await read_body(request, limit)
            if body is None:
                raise body_too_large(limit)
            exchange = parse_exchange(
                request.headers.get("Content-Type", ""),
                body,
                request.query_string,
                max_body_bytes=limit,
            )
        except ExchangeError as exc:
            return _exchange_response(exc.answer())
        try:
            # Envoy's x-request-id, on this request's log lines and audit record.
            with request_context(request.headers.get("x-request-id", "")):
                decision = await self._backend.exchange(
                    exchange.subject_token, exchange.audience, exchange.scopes
                )
        except Exception:
            # The pipeline turns its own failures into denials; this is the edge's last net.
            log.exception("token exchange failed outside the pipeline; denying")
            return _exchange_response(error_answer(500, "server_error", "internal_error"))
        return _exchange_response(answer_decision(decision, self._clock()))

    # --- admin ------------------------------------------------------------------------------------

    def _authorize_admin(self, request: web.Request) -> web.Response | None:
        return admin_refusal(request, self._backend.admin_token_sha256)

    async def revoke(self, request: web.Request) -> web.Response:
        refused = self._authorize_admin(request)
        if refused is not None:
            return refused
        try:
            revocation = parse_revocation(
                await self._json_body(request),
                self._clock(),
                min_seconds=self._settings.min_revocation_seconds,
            )
        except AdminRequestError as exc:
            document = {
                "error": "invalid_request",
                "field": exc.field,
                "error_description": exc.problem,
            }
            return _json(exc.status, document, {"Cache-Control": "no-store"})
        record = {revocation.kind: revocation.value, "until": revocation.until}
        try:
            await self._backend.revocations.revoke(
                revocation.kind, revocation.value, revocation.until
            )
        except StateUnavailable as exc:
            # Held by this replica (and pushed to the store once it answers), but not yet by the
            # others: the operator must know it is not in force everywhere.
            log.warning("revoked %s %r here only: %s", revocation.kind, revocation.value, exc)
            await self._backend.audit("revoke", {**record, "shared": False})
            document = {
                "error": "temporarily_unavailable",
                "error_description": "revoked on this replica only: the shared revocation list "
                "cannot be reached; this replica stores it there once it answers. Retry to "
                "confirm.",
            }
            return _json(503, document, {"Cache-Control": "no-store", "Retry-After": "1"})
        log.info("revoked %s %r until %d", revocation.kind, revocation.value, revocation.until)
        # Revoked first, then audited: an audit failure must not leave the token usable.
        await self._backend.audit("revoke", record)
        return _json(200, {"revoked": record}, {"Cache-Control": "no-store"})

    async def revocations(self, request: web.Request) -> web.Response:
        refused = self._authorize_admin(request)
        if refused is not None:
            return refused
        return _json(200, self._backend.revocations.snapshot(), {"Cache-Control": "no-store"})

    async def _json_body(self, request: web.Request) -> object:
        media_type = request.headers.get("Content-Type", "").partition(";")[0].strip().lower()
        if media_type != "application/json":
            raise AdminRequestError("content-type", "must be application/json")
        limit = self._settings.max_body_bytes
        body = await read_body(request, limit)
        if body is None:
            raise AdminRequestError("body", f"is over {limit} bytes", status=413)
        try:
            return json.loads(body, parse_constant=_refuse_constant)
        except ValueError:  # also UnicodeDecodeError
            raise AdminRequestError("body", "is not JSON") from None


def metadata(issuer: str) -> dict[str, object]:
    """The authorization server's metadata (RFC 8414 and OIDC Discovery; see the module)."""
    base = issuer.rstrip("/")
    return {
        "issuer": issuer,  # byte for byte the `iss` of every minted token
        "authorization_endpoint": base + AUTHORIZATION_PATH,
        "token_endpoint": base + TOKEN_PATH,
        "jwks_uri": base + JWKS_PATH,
        "response_types_supported": [],
        "grant_types_supported": [GRANT_TYPE_TOKEN_EXCHANGE],
        "token_endpoint_auth_methods_supported": ["none"],
        "subject_token_types_supported": sorted(SUBJECT_TOKEN_TYPES),
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["EdDSA"],
        # OIDC Discovery's defaults would say request_uri is supported; it is not.
        "request_uri_parameter_supported": False,
        "request_parameter_supported": False,
        "claims_parameter_supported": False,
    }


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not a number")


def build_app(
    backend: HttpBackend,
    *,
    settings: HttpSettings | None = None,
    clock: Callable[[], float] = time.time,
    registry: CollectorRegistry = REGISTRY,
) -> web.Application:
    settings = settings or HttpSettings()
    handlers = _Handlers(backend, settings, clock, registry)
    # aiohttp's own cap, for any path that reads a body without `read_body`.
    app = web.Application(client_max_size=settings.max_body_bytes)
    app.router.add_get(JWKS_PATH, handlers.jwks)
    app.router.add_get(ENDORSEMENTS_PATH, handlers.endorsements)
    app.router.add_get(DISCOVERY_PATH, handlers.discovery)
    app.router.add_get(AUTHORIZATION_SERVER_PATH, handlers.discovery)
    app.router.add_route("*", AUTHORIZATION_PATH, handlers.authorize)
    app.router.add_get("/healthz", handlers.healthz)
    app.router.add_get("/readyz", handlers.readyz)
    app.router.add_get("/metrics", handlers.metrics)
    app.router.add_post(TOKEN_PATH, handlers.token)
    app.router.add_post("/admin/revoke", handlers.revoke)
    app.router.add_get("/admin/revocations", handlers.revocations)
    return app


def parse_listen(listen: str) -> tuple[str, int]:
    """Split "host:port" or "[v6]:port" into (host, port); port 0 lets the OS choose. The
    settings were checked with the same parser at start (`signer.settings.host_port`)."""
    return host_port(listen, any_port=True)


async def start_app(
    app: web.Application, listen: str, *, reuse_port: bool = False
) -> tuple[web.AppRunner, int]:
    """Serve `app` on `listen`; the runner (for cleanup) and the port actually bound.
    `reuse_port`: share the port with the other workers (SO_REUSEPORT)."""
    host, port = parse_listen(listen)
    runner = web.AppRunner(
        app,
        access_log_class=RedactingAccessLogger,
        handle_signals=False,
        shutdown_timeout=DRAIN_SECONDS,
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_port=reuse_port or None).start()
        bound = runner.addresses[0][1]
    except BaseException:
        await runner.cleanup()
        raise
    return runner, int(bound)


async def start_http(
    gateway: Gateway, listen: str, *, settings: HttpSettings | None = None
) -> tuple[web.AppRunner, int]:
    settings = settings or HttpSettings.for_gateway(gateway.settings)
    app = build_app(PipelineBackend.from_gateway(gateway), settings=settings)
    add_key_routes(app, gateway)
    return await start_app(app, listen, reuse_port=gateway.settings.workers > 1)
