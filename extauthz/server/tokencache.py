"""The minted-token cache: in memory by default (aiocache), on Redis when replicas share it. With
a shared cache each replica keeps its own in memory in front of it (extauthz.server.mint): a token
it minted or has vouched for is served again with no Redis round trip.

Values cross Redis as JSON, never pickle: a compromised cache must not become code execution.
A cache that errors is bypassed, not trusted: the caller simply mints. A token read from Redis is
checked against the caller before it is served (`extauthz.server.mint.Minter`), so a Redis that lies
cannot hand one caller another caller's token.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from aiocache import SimpleMemoryCache
from aiocache.serializers import NullSerializer

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MintedToken:
    token: str
    jti: str
    subject: str
    audience: str
    scopes: tuple[str, ...]
    issued_at: int
    expires_at: int
    signers: tuple[int, ...]

    @property
    def lifetime(self) -> int:
        return self.expires_at - self.issued_at

    def fresh_at(self, now: float, remint_fraction: float) -> bool:
        """Still worth serving: more than `remint_fraction` of its lifetime left."""
        return now < self.expires_at - remint_fraction * self.lifetime

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> MintedToken:
        raw: dict[str, Any] = json.loads(text)
        return cls(
            token=str(raw["token"]),
            jti=str(raw["jti"]),
            subject=str(raw["subject"]),
            audience=str(raw["audience"]),
            scopes=tuple(str(s) for s in raw["scopes"]),
            issued_at=int(raw["issued_at"]),
            expires_at=int(raw["expires_at"]),
            signers=tuple(int(s) for s in raw["signers"]),
        )


def cache_key(credential_hash: str, audience: str, scopes: Iterable[str]) -> str:
    material = "\x1f".join([credential_hash, audience, " ".join(sorted(scopes))])
    return "keymint:token:" + hashlib.sha256(material.encode()).hexdigest()


class _RedisBackend:
    """The three calls the cache makes, on a redis.asyncio client (TLS and ACL as configured)."""

    def __init__(self, client: Redis) -> None:
        self._client = client

    async def get(self, key: str) -> str | None:
        value = await self._client.get(key)
        return None if value is None else _text(value)

    async def set(self, key: str, value: object, ttl: int) -> None:
        assert isinstance(value, str)  # JSON text only
        await self._client.set(key, value.encode(), ex=ttl)

    async def delete(self, key: str) -> None:
        await self._client.delete(key)

    async def close(self) -> None:
        """The client belongs to the shared state store, which closes it."""


class TokenCache:
    def __init__(self, backend: Any = None, *, shared: bool = False) -> None:
        """`shared` backends (Redis) store JSON text; the in-memory one stores the objects.

        What a shared backend returns is another process's word: the minter checks each token
        against the caller before serving it (extauthz.server.mint)."""
        self._shared = shared
        # No timeout on the in-memory backend: it cannot hang, and aiocache's timeout wraps every
        # call in `asyncio.wait_for` (a task and a trip through the event loop per get and set).
        self._backend = backend or SimpleMemoryCache(serializer=NullSerializer(), timeout=0)

    @property
    def shared(self) -> bool:
        return self._shared

    @classmethod
    def on_redis(cls, client: Redis) -> TokenCache:
        return cls(_RedisBackend(client), shared=True)

    @classmethod
    def redis(cls, url: str) -> TokenCache:
        """A cache on its own client for `url` (no credentials, no TLS options): for tests."""
        from signer.redisconn import RedisSettings, connect

        settings = RedisSettings.from_env({"KEYMINT_REDIS_URL": url})
        assert settings is not None
        client = connect(settings)
        cache = cls.on_redis(client)
        cache._owned = client
        return cache

    _owned: Redis | None = None

    async def get(self, key: str) -> MintedToken | None:
        try:
            value = await self._backend.get(key)
        except Exception as exc:  # any backend failure: bypass the cache
            log.warning("token cache read failed, minting instead: %s", type(exc).__name__)
            return None
        if value is None:
            return None
        if isinstance(value, MintedToken):
            return value
        try:
            return MintedToken.from_json(value)
        except (ValueError, KeyError, TypeError):
            log.warning("token cache held an unreadable entry; ignoring it")
            return None

    async def set(self, key: str, token: MintedToken, ttl_seconds: int) -> None:
        value: object = token.to_json() if self._shared else token
        try:
            await self._backend.set(key, value, ttl=max(1, ttl_seconds))
        except Exception as exc:  # any backend failure: bypass the cache
            log.warning("token cache write failed: %s", type(exc).__name__)

    async def delete(self, key: str) -> None:
        try:
            await self._backend.delete(key)
        except Exception as exc:  # any backend failure: bypass the cache
            log.warning("token cache delete failed: %s", type(exc).__name__)

    async def close(self) -> None:
        await self._backend.close()
        if self._owned is not None:
            await self._owned.aclose()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
