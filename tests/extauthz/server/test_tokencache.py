"""The in-memory token cache: a miss's cache read and write wait for nothing."""

from __future__ import annotations

import asyncio

from extauthz.server.tokencache import MintedToken, TokenCache, cache_key

TOKEN = MintedToken(
    token="header.claims.signature",
    jti="j-1",
    subject="spiffe://prod.test/ns/web/sa/search",
    audience="https://orders.internal",
    scopes=("orders:read",),
    issued_at=1_700_000_000,
    expires_at=1_700_000_900,
    signers=(1, 2),
)


def test_in_memory_reads_and_writes_do_not_yield_to_the_event_loop() -> None:
    """A new credential's mint reads the cache once and writes it once; on a busy event loop each
    yield would queue the request behind every other ready callback."""

    async def run() -> tuple[list[str], MintedToken | None, MintedToken | None]:
        cache = TokenCache()
        key = cache_key("credential-hash", TOKEN.audience, TOKEN.scopes)
        others: list[str] = []
        asyncio.get_running_loop().call_soon(others.append, "ran")
        missing = await cache.get(key)
        await cache.set(key, TOKEN, 900)
        found = await cache.get(key)
        return list(others), missing, found

    others, missing, found = asyncio.run(run())
    assert others == []
    assert missing is None
    assert found == TOKEN


def test_in_memory_entries_expire_with_their_ttl() -> None:
    async def run() -> MintedToken | None:
        cache = TokenCache()
        await cache.set("k", TOKEN, 1)
        await asyncio.sleep(1.1)
        return await cache.get("k")

    assert asyncio.run(run()) is None
