"""The state every replica shares, in Redis (KEYMINT_REDIS_URL; signer.redisconn says how).

    keymint:revoked:subject, keymint:revoked:jti   sorted sets: value scored by the unix time it is
                                                   revoked until; ZADD GT, so a write never shortens
                                                   one; expired entries are dropped on each write.
                                                   No TTL on the sets: a Redis that evicts volatile
                                                   keys under memory pressure never evicts these
    keymint:revoked:version                        a random marker, new on every change
    keymint:keyring, keymint:keyring:version       the key ring document (JSON text) and its marker,
                                                   replaced only by compare-and-set (a Lua script)
    keymint:rate:<sha256 of the identity>          a token bucket (a Lua script, Redis's clock)
    keymint:events                                 pub/sub: each revocation, each key ring change

Nothing here is trusted to grant anything: a revocation only ever denies, and a key ring read from
Redis is re-verified from the pinned trust root before it is used (extauthz.server.keyring).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from extauthz.server.limits import StateUnavailable
from extauthz.server.state.base import Event, KeyRingConflict, RevocationSnapshot, Versions
from signer.redisconn import (
    BUCKET_PREFIX,
    EVENTS_CHANNEL,
    KEYRING_KEY,
    KEYRING_VERSION_KEY,
    REVOKED_KEYS,
    REVOKED_VERSION_KEY,
    RedisSettings,
    connect,
)

log = logging.getLogger(__name__)

FAILURES = (RedisError, OSError, asyncio.TimeoutError)

# KEYS: bucket. ARGV: rate per second, burst, tokens wanted. Redis's clock, so replicas with
# skewed clocks fill one bucket at one rate. Returns {granted, seconds until one more (text)}.
TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(bucket[1])
local ts = tonumber(bucket[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local granted = math.min(want, math.floor(tokens))
tokens = tokens - granted
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
local wait = 0
if granted == 0 then
  wait = (1 - tokens) / rate
end
return {granted, tostring(wait)}
"""

# KEYS: document, version. ARGV: expected version ("" for none), document, new version, channel.
SAVE_KEYRING = """
local current = redis.call('GET', KEYS[2])
if redis.call('EXISTS', KEYS[1]) == 0 or not current then
  current = ''
end
if current ~= ARGV[1] then
  return {0, current}
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[3])
redis.call('PUBLISH', ARGV[4], '{"kind":"keyring"}')
return {1, ARGV[3]}
"""


class RedisStore:
    def __init__(self, settings: RedisSettings, *, retry_seconds: float = 0.5) -> None:
        self._settings = settings
        self._client: Redis = connect(settings)
        self._retry_seconds = retry_seconds
        self._take = self._client.register_script(TAKE)
        self._save_keyring = self._client.register_script(SAVE_KEYRING)

    @property
    def client(self) -> Redis:
        return self._client

    @property
    def shared(self) -> bool:
        return True

    @property
    def where(self) -> str:
        return self._settings.where

    async def add_revocation(self, kind: str, value: str, until: float) -> None:
        key = REVOKED_KEYS[kind]
        announcement = json.dumps({"kind": kind, "value": value, "until": until})
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.zremrangebyscore(key, "-inf", time.time())  # what nothing can use now
                pipe.zadd(key, {value: until}, gt=True)
                pipe.set(REVOKED_VERSION_KEY, uuid.uuid4().hex)
                pipe.publish(EVENTS_CHANNEL, announcement)
                await pipe.execute()
        except FAILURES as exc:
            raise StateUnavailable(f"revocation not stored in {self.where}: {_why(exc)}") from None

    async def revocations(self) -> RevocationSnapshot:
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                for kind in ("subject", "jti"):
                    pipe.zrangebyscore(REVOKED_KEYS[kind], "-inf", "+inf", withscores=True)
                subjects, jtis = await pipe.execute()
        except FAILURES as exc:
            raise StateUnavailable(
                f"cannot read revocations from {self.where}: {_why(exc)}"
            ) from None
        return {"subjects": _table(subjects), "jtis": _table(jtis)}

    async def versions(self) -> Versions:
        try:
            revocations, keyring = await self._client.mget(REVOKED_VERSION_KEY, KEYRING_VERSION_KEY)
        except FAILURES as exc:
            raise StateUnavailable(f"{self.where} did not answer: {_why(exc)}") from None
        return Versions(_text(revocations), _text(keyring))

    async def load_keyring(self) -> tuple[str | None, str]:
        try:
            document, version = await self._client.mget(KEYRING_KEY, KEYRING_VERSION_KEY)
        except FAILURES as exc:
            raise StateUnavailable(
                f"cannot read the key ring from {self.where}: {_why(exc)}"
            ) from None
        if document is None:
            return None, ""
        return _text(document), _text(version)

    async def save_keyring(self, document: str, expected_version: str) -> str:
        version = uuid.uuid4().hex
        try:
            stored, current = await self._save_keyring(
                keys=[KEYRING_KEY, KEYRING_VERSION_KEY],
                args=[expected_version, document, version, EVENTS_CHANNEL],
            )
        except FAILURES as exc:
            raise StateUnavailable(f"key ring not stored in {self.where}: {_why(exc)}") from None
        if not stored:
            raise KeyRingConflict(
                f"the key ring in {self.where} changed since this replica read it (another "
                "replica rotated the key): retry"
            )
        return _text(current)

    async def take(self, key: str, want: int, rate: float, burst: int) -> tuple[int, float]:
        bucket = BUCKET_PREFIX + hashlib.sha256(key.encode()).hexdigest()
        try:
            granted, wait = await self._take(keys=[bucket], args=[repr(rate), burst, want])
        except FAILURES as exc:
            raise StateUnavailable(f"rate-limit bucket in {self.where}: {_why(exc)}") from None
        return int(granted), float(wait)

    def events(self) -> AsyncIterator[Event] | None:
        return self._events()

    async def _events(self) -> AsyncIterator[Event]:
        while True:
            pubsub = self._client.pubsub()
            try:
                await pubsub.subscribe(EVENTS_CHANNEL)
                yield Event("resync")  # whatever was announced while unsubscribed was missed
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None:
                        yield _event(message.get("data"))
            except FAILURES as exc:
                log.warning("Redis announcements from %s interrupted: %s", self.where, _why(exc))
            finally:
                with contextlib.suppress(*FAILURES):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(self._retry_seconds)

    async def close(self) -> None:
        await self._client.aclose()


def _event(data: Any) -> Event:
    try:
        document = json.loads(data)
        kind = document["kind"]
        if kind == "keyring":
            return Event("keyring")
        if kind in REVOKED_KEYS:
            until = float(document["until"])
            value = document["value"]
            if isinstance(value, str) and math.isfinite(until):
                return Event(kind, value, until)
    except (ValueError, TypeError, KeyError):
        pass
    log.warning("an unreadable announcement on %s: reading the store again", EVENTS_CHANNEL)
    return Event("resync")


def _table(entries: list[tuple[bytes, float]]) -> dict[str, float]:
    return {value.decode(errors="replace"): float(until) for value, until in entries}


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:200]
