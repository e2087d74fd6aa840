"""Signing keys of an OIDC issuer: discovery, a shared cache, and fetches nobody can force.

Keys come only from the `jwks_uri` of the issuer's own discovery document, whose `issuer` must be
the configured one and whose `jwks_uri` must be on the issuer's origin, or from a `jwks_uri` the
operator configured (Google serves its keys from another host); never from a token header (`jku`,
`x5u`, `jwk`, `x5c`). Only keys for the issuer's algorithms are kept (`extauthz.identity.keys`).
The rules:

- fresh: keys are used without any fetch until `max-age` (clamped) has passed; ETag revalidates.
- bounded: at most one fetch per issuer per `fetch_cooldown_seconds`, whatever triggers it (cold
  start, expiry, an unknown `kid`, a retry after failure); concurrent callers share that fetch.
- stale-if-unreachable: when the issuer cannot be reached (or answers nonsense), the last keys
  keep working for `serve_stale_seconds` past their freshness, then `issuer_unreachable`.

The record lives in this process (by default) or in an aiocache cache given to share it between
replicas (Redis). Freshness is computed from the injected clock, not the cache's TTL, so it is exact
under test. A process-local record is read with no cache call at all: a verification on the
request path then never yields to the event loop for its keys (aiocache wraps every call in
`asyncio.wait_for`, which schedules a task).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from typing import Any

import aiohttp

from extauthz.identity._http import (
    FetchError,
    JsonResponse,
    fetch_json,
    require_url,
    same_origin,
)
from extauthz.identity.errors import IdentityConfigError, IdentityError, Reason
from extauthz.identity.keys import (
    USE_SIGNATURE,
    PublicKey,
    VerificationKey,
    accepted_jwks,
    is_rs256_signing_key,
    parse_jwks,
)
from extauthz.server.metrics import JWKS_FETCHES

log = logging.getLogger(__name__)

# The last fetch of each issuer's keys in this process, for /readyz (`fetch_status`).
_LAST_FETCH: dict[str, tuple[bool, float, str]] = {}


def _fetched(issuer: str, at: float, problem: str | None) -> None:
    JWKS_FETCHES.labels(issuer, "error" if problem else "ok").inc()
    _LAST_FETCH[issuer] = (problem is None, at, problem or "")


def fetch_status() -> dict[str, dict[str, object]]:
    """Each issuer whose keys this process fetched: whether the last fetch worked, when, and
    what was wrong. An issuer not fetched yet (keys are fetched on first use) is absent."""
    return {
        issuer: {"ok": ok, "at": at, **({"problem": problem} if problem else {})}
        for issuer, (ok, at, problem) in sorted(_LAST_FETCH.items())
    }


Clock = Callable[[], float]
__all__ = ["JwksCache", "JwksSettings", "is_rs256_signing_key"]


@dataclass(frozen=True, slots=True)
class JwksSettings:
    min_cache_seconds: float = 60.0  # floor for the issuer's Cache-Control max-age
    max_cache_seconds: float = 3600.0  # ceiling for it
    fetch_cooldown_seconds: float = 60.0  # at most one fetch per issuer per this
    serve_stale_seconds: float = 24 * 3600.0  # keys outlive freshness this long if unreachable
    fetch_timeout_seconds: float = 5.0
    max_document_bytes: int = 64 * 1024
    max_keys: int = 32
    insecure_allow_http: bool = False  # only for a local test issuer

    def __post_init__(self) -> None:
        if not 0 < self.min_cache_seconds <= self.max_cache_seconds:
            raise IdentityConfigError("need 0 < min_cache_seconds <= max_cache_seconds")
        if self.fetch_cooldown_seconds <= 0 or self.fetch_timeout_seconds <= 0:
            raise IdentityConfigError("fetch cooldown and timeout must be positive")
        if self.serve_stale_seconds < 0 or self.max_document_bytes <= 0 or self.max_keys <= 0:
            raise IdentityConfigError("serve_stale_seconds, size and key caps must be sane")


@dataclass(frozen=True, slots=True)
class _KeySetRecord:
    """What is cached per issuer: the accepted JWKs and when they stop being fresh / usable."""

    jwks_uri: str
    keys_json: str  # JSON array of the accepted JWKs, in the issuer's order
    etag: str | None
    fresh_until: float
    usable_until: float

    def dumps(self) -> str:
        return json.dumps(
            {
                "jwks_uri": self.jwks_uri,
                "keys_json": self.keys_json,
                "etag": self.etag,
                "fresh_until": self.fresh_until,
                "usable_until": self.usable_until,
            }
        )

    @classmethod
    def loads(cls, text: str) -> _KeySetRecord:
        data = json.loads(text)
        return cls(
            jwks_uri=str(data["jwks_uri"]),
            keys_json=str(data["keys_json"]),
            etag=None if data["etag"] is None else str(data["etag"]),
            fresh_until=float(data["fresh_until"]),
            usable_until=float(data["usable_until"]),
        )


class JwksCache:
    """The signing keys of one OIDC issuer. `verification_key(kid)` is the whole interface."""

    def __init__(
        self,
        issuer: str,
        *,
        session: aiohttp.ClientSession,
        cache: Any | None = None,  # an aiocache BaseCache to share; None: this process only
        settings: JwksSettings | None = None,
        clock: Clock = time.time,
        algorithms: Collection[str] = ("RS256",),
        uses: Collection[str] = (USE_SIGNATURE,),
        jwks_uri: str | None = None,  # the operator's; None: the discovery document's
    ) -> None:
        self._settings = settings or JwksSettings()
        self.issuer = require_url(issuer, allow_http=self._settings.insecure_allow_http)
        self._algorithms = frozenset(algorithms)
        self._uses = frozenset(uses)
        self._jwks_uri = (
            None
            if jwks_uri is None
            else require_url(jwks_uri, allow_http=self._settings.insecure_allow_http)
        )
        self._session = session
        self._cache = cache
        self._cache_key = f"keymint:jwks:{issuer}"
        self._clock = clock
        self._last_fetch_at: float | None = None
        self._inflight: asyncio.Future[_KeySetRecord] | None = None
        self._local: _KeySetRecord | None = None  # last record seen, if the cache fails
        self._parsed_from: str | None = None
        self._parsed: dict[str, VerificationKey] = {}

    async def signing_key(self, kid: str) -> PublicKey:
        """The issuer's public key named `kid` (see `verification_key`)."""
        return (await self.verification_key(kid)).key

    async def verification_key(self, kid: str) -> VerificationKey:
        """The issuer's key named `kid`; IdentityError unknown_kid or issuer_unreachable."""
        keys = await self._usable_keys()
        if kid not in keys:
            fetch = self._join_or_start_fetch()
            if fetch is not None:
                keys = self._parse(await asyncio.shield(fetch))
        key = keys.get(kid)
        if key is None:
            raise IdentityError(
                Reason.UNKNOWN_KID, f"kid {kid[:64]!r} is not in the JWKS of {self.issuer}"
            )
        return key

    async def _usable_keys(self) -> dict[str, VerificationKey]:
        record = await self._read()
        if record is not None and self._clock() < record.fresh_until:
            return self._parse(record)
        fetch = self._join_or_start_fetch()
        if fetch is not None:
            try:
                return self._parse(await asyncio.shield(fetch))
            except IdentityError:
                if record is None or self._clock() >= record.usable_until:
                    raise
                log.warning("serving stale JWKS for %s: issuer unreachable", self.issuer)
                return self._parse(record)
        if record is not None and self._clock() < record.usable_until:
            return self._parse(record)  # stale, waiting out the cooldown before asking again
        raise IdentityError(
            Reason.ISSUER_UNREACHABLE, f"no usable keys for {self.issuer} (fetch cooling down)"
        )

    def _join_or_start_fetch(self) -> asyncio.Future[_KeySetRecord] | None:
        """The fetch to wait for: the one in flight, a new one, or None while cooling down."""
        if self._inflight is not None:
            return self._inflight
        now = self._clock()
        cooldown = self._settings.fetch_cooldown_seconds
        if self._last_fetch_at is not None and now - self._last_fetch_at < cooldown:
            return None
        self._last_fetch_at = now
        self._inflight = asyncio.ensure_future(self._fetch())
        self._inflight.add_done_callback(self._fetch_done)
        return self._inflight

    def _fetch_done(self, fetch: asyncio.Future[_KeySetRecord]) -> None:
        self._inflight = None
        if not fetch.cancelled():
            fetch.exception()  # retrieved here, so a fetch whose waiters all left is not "lost"

    async def _fetch(self) -> _KeySetRecord:
        previous = await self._read()
        try:
            record = await self._fetch_record(previous)
        except FetchError as error:
            log.warning("JWKS fetch for %s failed: %s", self.issuer, error)
            _fetched(self.issuer, self._clock(), str(error))
            raise IdentityError(
                Reason.ISSUER_UNREACHABLE, f"cannot fetch keys of {self.issuer}: {error}"
            ) from None
        _fetched(self.issuer, self._clock(), None)
        await self._write(record)
        return record

    async def _fetch_record(self, previous: _KeySetRecord | None) -> _KeySetRecord:
        jwks_uri = self._jwks_uri or await self._discovered_jwks_uri()
        known = previous is not None and previous.jwks_uri == jwks_uri
        response = await self._get(jwks_uri, etag=previous.etag if previous and known else None)
        settings = self._settings
        fresh_for = min(
            max(response.max_age or 0.0, settings.min_cache_seconds), settings.max_cache_seconds
        )
        fresh_until = self._clock() + fresh_for
        usable_until = fresh_until + settings.serve_stale_seconds
        if response.not_modified and previous is not None:
            return replace(previous, fresh_until=fresh_until, usable_until=usable_until)
        keys = self._accepted_keys(response.document)
        return _KeySetRecord(jwks_uri, json.dumps(keys), response.etag, fresh_until, usable_until)

    async def _discovered_jwks_uri(self) -> str:
        # Discovery is re-read on every refresh: it is what vouches for jwks_uri, and refreshes
        # are rare (bounded by the cooldown).
        discovery = await self._get(f"{self.issuer}/.well-known/openid-configuration")
        document = discovery.document
        if not isinstance(document, dict) or document.get("issuer") != self.issuer:
            raise FetchError("discovery document names another issuer")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not same_origin(jwks_uri, self.issuer):
            raise FetchError("jwks_uri is missing or not on the issuer's origin")
        return jwks_uri

    async def _get(self, url: str, etag: str | None = None) -> JsonResponse:
        return await fetch_json(
            url,
            session=self._session,
            timeout=self._settings.fetch_timeout_seconds,
            max_bytes=self._settings.max_document_bytes,
            etag=etag,
        )

    def _accepted_keys(self, document: object) -> list[dict[str, Any]]:
        try:
            return accepted_jwks(document, self._algorithms, self._uses, self._settings.max_keys)
        except ValueError as exc:
            raise FetchError(str(exc)) from None

    def _parse(self, record: _KeySetRecord) -> dict[str, VerificationKey]:
        if record.keys_json != self._parsed_from:
            try:
                jwks = json.loads(record.keys_json)
            except ValueError:
                jwks = []  # a corrupted shared-cache entry: no keys rather than a crash
            parsed = parse_jwks(
                jwks if isinstance(jwks, list) else [], self._algorithms, self._uses
            )
            self._parsed, self._parsed_from = parsed, record.keys_json
        return self._parsed

    # The cache is an optimisation: if it fails, fall through to the local copy and the issuer.
    # Its backends raise their own error types (Redis, sockets), hence the broad excepts.
    async def _read(self) -> _KeySetRecord | None:
        if self._cache is None:
            return self._local
        try:
            text = await self._cache.get(self._cache_key)
            if text is not None:
                self._local = _KeySetRecord.loads(text)
        except Exception:
            log.exception("JWKS cache read failed for %s; using the local copy", self.issuer)
        return self._local

    async def _write(self, record: _KeySetRecord) -> None:
        self._local = record
        if self._cache is None:
            return
        try:
            await self._cache.set(self._cache_key, record.dumps())
        except Exception:
            log.exception("JWKS cache write failed for %s", self.issuer)
