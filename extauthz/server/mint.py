"""Minting: claims, lifetime clamps, threshold signing, and the token cache in front of it.

The hot path is a cache hit: a hash and a lookup. A miss builds the claims, clamps the lifetime to
what policy grants and to the caller's own credential expiry, and asks the coordinator for a
threshold signature with the evidence attached for the signers' guards. Concurrent misses for the
same key share one mint.

A fresh token is recorded (`record_with`: the gateway's audit log) before anyone sees it: not the
caller, not the callers waiting on the same mint, not the cache other replicas read. If the record
cannot be made, nobody gets the token (`MintNotRecorded`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from extauthz.errors import ExtAuthzError
from extauthz.model import Grant, Identity
from extauthz.policy.attributes import NO_ATTRIBUTES
from extauthz.policy.model import AuthzRequest
from extauthz.policy.rego_input import CREDENTIAL_HEADERS
from extauthz.server.claims import confirmation_claim, provenance_claims
from extauthz.server.tokencache import MintedToken, TokenCache, cache_key
from signer.errors import SignerError
from signer.proto import signer_pb2
from signer.token import ALG, b64url_decode, compact, header_for, kid_for, signing_input

log = logging.getLogger(__name__)


class MintError(ExtAuthzError):
    """A token could not be minted; `reason` is a stable code."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


class MintNotRecorded(ExtAuthzError):
    """A token was signed but its record could not be made durable, so it was not released."""

    def __init__(self, jti: str, problem: str) -> None:
        self.jti = jti
        self.problem = problem
        super().__init__(f"token {jti} was signed but not recorded, so not released: {problem}")


MintRecorder = Callable[[AuthzRequest, Grant, "MintedToken"], Awaitable[object]]
# (jti, why): the signers may have been asked to sign this jti, and the mint gave up (a deadline,
# no quorum, the caller gone). Called synchronously, also from a cancelled task: the recorder
# schedules its write.
AbandonRecorder = Callable[[str, str], None]


class SignResult(Protocol):
    @property
    def signature(self) -> bytes: ...
    @property
    def signers(self) -> tuple[int, ...]: ...


class ThresholdSigner(Protocol):
    """The coordinator, as minting sees it."""

    async def sign(
        self,
        message: bytes,
        *,
        evidence: signer_pb2.Evidence | None = None,
        request_id: str = "",
        timeout: float = 2.0,
    ) -> SignResult: ...


@dataclass(frozen=True, slots=True)
class MintSettings:
    issuer: str
    default_ttl_seconds: int = 900
    min_ttl_seconds: int = 30  # a credential about to expire gets a denial, not a 2-second token
    remint_fraction: float = 0.1  # re-mint when less than this share of the lifetime is left
    sign_timeout: float = 2.0
    # Credential headers a Rego policy reads (KEYMINT_POLICY_CREDENTIAL_HEADERS): the signers
    # run the same policy, so these travel to them with the rest of what it reads.
    policy_credential_headers: frozenset[str] = frozenset()


class Minter:
    def __init__(
        self,
        *,
        settings: MintSettings,
        signer: ThresholdSigner,
        group_public_key: Callable[[], bytes],
        cache: TokenCache | None = None,
        clock: Callable[[], float] = time.time,
        new_jti: Callable[[], str] = lambda: str(uuid.uuid4()),
        published_keys: Callable[[], Sequence[bytes]] | None = None,
    ) -> None:
        self._settings = settings
        self._signer = signer
        self._group_public_key = group_public_key
        self._published_keys = published_keys or (lambda: [group_public_key()])
        self._cache = cache or TokenCache()
        # In front of a shared cache, this replica's own: a token it minted or already vouched
        # for is served again without a Redis round trip and a signature check per request.
        self._local = TokenCache() if self._cache.shared else None
        self._clock = clock
        self._new_jti = new_jti
        self._inflight: dict[str, asyncio.Future[MintedToken]] = {}
        self._record: MintRecorder | None = None
        self._abandoned: AbandonRecorder | None = None

    def record_with(
        self, recorder: MintRecorder, *, abandoned: AbandonRecorder | None = None
    ) -> None:
        """Make each fresh token durable through `recorder` before it is released; an exception
        from it keeps the token from everyone (`MintNotRecorded`). `abandoned` hears of each jti
        the signers may have been asked to sign when the mint then gave up, so that a signature
        in the signers' logs with no token in the gateway's can be told from one kept quiet."""
        self._record = recorder
        self._abandoned = abandoned

    @property
    def cache(self) -> TokenCache:
        return self._cache

    async def forget(self, identity: Identity, grant: Grant) -> None:
        """Drop the cached token (e.g. its jti was revoked), so the next call mints afresh."""
        key = cache_key(identity.credential_hash, grant.audience, grant.scopes)
        if self._local is not None:
            await self._local.delete(key)
        await self._cache.delete(key)

    async def mint(
        self, request: AuthzRequest, grant: Grant, policy_sha256: str
    ) -> tuple[MintedToken, bool]:
        """The token for this request's identity and grant, and whether it came from the cache.

        `policy_sha256` names the policy version that granted it: the signers decide under it."""
        identity = request.identity
        key = cache_key(identity.credential_hash, grant.audience, grant.scopes)
        token = await self._cached(key, identity, grant)
        # A token minted under a policy that granted longer than today's grant is not served:
        # a policy that shortens a lifetime takes effect at once, not when old tokens expire.
        if (
            token is not None
            and token.lifetime <= grant.ttl_seconds
            and token.fresh_at(self._clock(), self._settings.remint_fraction)
        ):
            return token, True
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending), True
        future: asyncio.Future[MintedToken] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            token = await self._mint(request, grant, policy_sha256)
            if self._record is not None:
                try:
                    await self._record(request, grant, token)
                except Exception as exc:
                    raise MintNotRecorded(token.jti, str(exc)) from exc
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody else must log it
            raise
        else:
            future.set_result(token)
            await self._keep(key, token)
            return token, False
        finally:
            del self._inflight[key]

    async def _cached(self, key: str, identity: Identity, grant: Grant) -> MintedToken | None:
        """The cached token for `key`: this replica's own, else the shared cache's once it has
        vouched for it (then kept as its own)."""
        if self._local is not None:
            token = await self._local.get(key)
            if token is not None:
                return token
        token = await self._cache.get(key)
        if token is None or not self._cache.shared:
            return token
        token = self._vouched(token, identity, grant)
        if token is not None and self._local is not None:
            await self._local.set(key, token, token.expires_at - int(self._clock()))
        return token

    async def _keep(self, key: str, token: MintedToken) -> None:
        ttl = token.expires_at - int(self._clock())
        if self._local is not None:
            await self._local.set(key, token, ttl)
        await self._cache.set(key, token, ttl)

    async def _mint(self, request: AuthzRequest, grant: Grant, policy_sha256: str) -> MintedToken:
        identity = request.identity
        now = int(self._clock())
        ttl = min(grant.ttl_seconds, self._settings.default_ttl_seconds, identity.expires_at - now)
        if ttl < self._settings.min_ttl_seconds:
            raise MintError(
                "credential_expiring",
                f"the presented credential expires in {identity.expires_at - now}s, too soon to "
                "mint a token",
            )
        jti = self._new_jti()
        claims = {
            **self._caller_claims(identity, grant),
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "jti": jti,
        }
        message = signing_input(header_for(self._group_public_key()), claims)
        evidence = evidence_message(
            request, policy_sha256, credentials=self._settings.policy_credential_headers
        )
        try:
            outcome = await self._signer.sign(
                message, evidence=evidence, request_id=jti, timeout=self._settings.sign_timeout
            )
        except BaseException as exc:
            if self._abandoned is not None:
                why = "cancelled" if isinstance(exc, asyncio.CancelledError) else str(exc)
                self._abandoned(jti, why or type(exc).__name__)
            raise
        return MintedToken(
            token=compact(message, outcome.signature),
            jti=jti,
            subject=identity.subject,
            audience=grant.audience,
            scopes=grant.scopes,
            issued_at=now,
            expires_at=now + ttl,
            signers=outcome.signers,
        )

    def _caller_claims(self, identity: Identity, grant: Grant) -> dict[str, object]:
        """Every claim that says whose token it is and what for: all but the times and jti."""
        claims: dict[str, object] = {
            **provenance_claims(identity),
            "iss": self._settings.issuer,
            "sub": identity.subject,
            "aud": grant.audience,
            "scope": " ".join(grant.scopes),
        }
        cnf = confirmation_claim(identity)
        if cnf is not None:
            claims["cnf"] = cnf
        return claims

    def _vouched(self, cached: MintedToken, identity: Identity, grant: Grant) -> MintedToken | None:
        """A token from a shared cache, if it is ours and this caller's: signed by a published
        key, with exactly the caller's claims (subject, cnf, audience, scopes, provenance). Its
        times and jti are read from the token, never from the cache's record of it."""
        claims = verified_claims(cached.token, self._published_keys())
        expected = self._caller_claims(identity, grant)
        if claims is None or {k: v for k, v in claims.items() if k not in TIMES} != expected:
            log.warning(
                "a token in the shared cache is not this caller's (or not ours): minting instead"
            )
            return None
        return MintedToken(
            token=cached.token,
            jti=str(claims["jti"]),
            subject=identity.subject,
            audience=grant.audience,
            scopes=grant.scopes,
            issued_at=int(claims["iat"]),
            expires_at=int(claims["exp"]),
            signers=cached.signers,
        )


TIMES = frozenset({"iat", "nbf", "exp", "jti"})


def verified_claims(token: str, keys: Sequence[bytes]) -> dict[str, Any] | None:
    """The claims of `token` if one of `keys` (by kid) signed it and its times are integers."""
    try:
        signing, _, signature = token.rpartition(".")
        header_segment, _, claims_segment = signing.partition(".")
        header = json.loads(b64url_decode(header_segment))
        claims = json.loads(b64url_decode(claims_segment))
        key = next((k for k in keys if kid_for(k) == header.get("kid")), None)
        if key is None or header.get("alg") != ALG or not isinstance(claims, dict):
            return None
        Ed25519PublicKey.from_public_bytes(key).verify(
            b64url_decode(signature), signing.encode("ascii")
        )
    except (ValueError, TypeError, AttributeError, InvalidSignature, SignerError):
        return None
    if not all(type(claims.get(name)) is int for name in ("iat", "nbf", "exp")):
        return None
    if not isinstance(claims.get("jti"), str):
        return None
    return claims


def evidence_message(
    request: AuthzRequest, policy_sha256: str, *, credentials: frozenset[str] = frozenset()
) -> signer_pb2.Evidence:
    """Everything the signers' guards need to decide as the gateway did, and nothing secret
    beyond the credential itself: credential headers never travel a second time, except the
    `credentials` the operator lets a Rego policy read (the signers run it on the same input).
    The request's attributes (addresses, body, ...) travel as the JSON the guard reads back."""
    identity, route = request.identity, request.route
    stripped = CREDENTIAL_HEADERS - credentials
    return signer_pb2.Evidence(
        kind=identity.evidence.kind,
        value=identity.evidence.value,
        host=route.host,
        path=route.path,
        method=route.method,
        context_extensions=dict(route.context_extensions),
        headers={
            name: value for name, value in request.headers.items() if name.lower() not in stripped
        },
        policy_sha256=policy_sha256,
        requested_audience=request.audience or "",
        requested_scopes=list(request.scopes),
        requested_ttl_seconds=request.ttl_seconds or 0,
        request_attributes=(
            b"" if request.attributes == NO_ATTRIBUTES else request.attributes.to_json()
        ),
    )
