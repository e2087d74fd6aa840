"""SharedRateLimiter under concurrency: requests that find an identity's lease spent while it is
being renewed wait for that one renewal, so a burst costs the store a round trip or two, not one
per request, and no leased token is dropped unspent."""

from __future__ import annotations

import asyncio

from extauthz.server.limits import RateLimiter, SharedRateLimiter

KEY = "subject\x1fspiffe\x1fspiffe://prod.test/a"


class SlowBuckets:
    """A bucket store whose every take waits for `release`, counting takes and tokens given."""

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens
        self.takes: list[int] = []
        self.release = asyncio.Event()

    async def take(self, key: str, want: int, rate: float, burst: int) -> tuple[int, float]:
        self.takes.append(want)
        await self.release.wait()
        granted = min(want, self.tokens)
        self.tokens -= granted
        return granted, 0.0 if granted else 5.0


def limiter(store: SlowBuckets) -> SharedRateLimiter:
    return SharedRateLimiter(
        store,
        rate_per_second=1.0,
        burst=1000,
        fallback=RateLimiter(rate_per_second=1.0, burst=1000),
    )


def test_a_burst_on_a_spent_lease_waits_for_one_renewal() -> None:
    async def run() -> tuple[list[tuple[bool, int]], SlowBuckets]:
        store = SlowBuckets(tokens=1000)
        shared = limiter(store)
        calls = [asyncio.ensure_future(shared.allow(KEY)) for _ in range(16)]
        await asyncio.sleep(0.01)
        assert len(store.takes) == 1  # the other 15 wait on the first renewal
        store.release.set()
        return await asyncio.gather(*calls), store

    answers, store = asyncio.run(run())
    assert answers == [(True, 0)] * 16
    assert len(store.takes) == 2  # the first for one token, the second for the 15 that waited
    assert store.takes[1] >= 15
    assert 1000 - store.tokens == sum(store.takes)  # the store gave what was asked, no more


def test_a_refused_renewal_refuses_its_waiters_without_asking_again() -> None:
    async def run() -> tuple[list[tuple[bool, int]], SlowBuckets]:
        store = SlowBuckets(tokens=0)
        shared = limiter(store)
        calls = [asyncio.ensure_future(shared.allow(KEY)) for _ in range(8)]
        await asyncio.sleep(0.01)
        store.release.set()
        return await asyncio.gather(*calls), store

    answers, store = asyncio.run(run())
    assert answers == [(False, 5)] * 8
    assert len(store.takes) == 1
