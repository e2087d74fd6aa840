"""One replica without Redis: revocations and the key ring under the state directory survive a
restart, and the workers of `serve --workers N` share them and one set of rate-limit buckets."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from extauthz.server.keyring import KeyRing, KeyRingConflictError
from extauthz.server.limits import RateLimiter, Revocations, SharedRateLimiter
from extauthz.server.state import LocalStore, SharedState, StateSettings
from signer.token import kid_for
from tests.extauthz.server.test_keyring import InMemorySigners, root_of
from tests.helpers import ManualClock


def state_in(directory: Path) -> SharedState:
    return SharedState(LocalStore(directory), Revocations(), StateSettings(0.1, 1.0))


def test_revocations_survive_a_restart_and_reach_the_other_workers(tmp_path: Path) -> None:
    async def run() -> None:
        first, second = state_in(tmp_path), state_in(tmp_path)
        assert await first.sync_once()
        assert await second.sync_once()
        await first.revocations.revoke("subject", "spiffe://prod.test/a", time.time() + 60)
        await first.revocations.revoke("jti", "jti-1", time.time() + 60)
        await first.revocations.revoke("subject", "spiffe://prod.test/old", time.time() - 1)
        assert await second.sync_once()  # the other worker's next poll
        assert second.revocations.subject_revoked("spiffe://prod.test/a")
        assert second.revocations.jti_revoked("jti-1")
        restarted = state_in(tmp_path)  # a new process on the same directory
        assert await restarted.sync_once()
        assert restarted.revocations.snapshot()["subjects"].keys() == {"spiffe://prod.test/a"}

    asyncio.run(run())
    document = json.loads((tmp_path / "revocations.json").read_text())
    assert set(document["subjects"]) == {"spiffe://prod.test/a"}  # expired entries dropped


def test_two_workers_rotating_at_once_change_the_ring_once(tmp_path: Path) -> None:
    clock = ManualClock(time.time())
    signers = InMemorySigners(clock)
    signers.add_key()
    asyncio.run(signers.refresh_keys())
    root = root_of(signers)

    async def run() -> None:
        first, second = [
            await KeyRing.load(
                signers,
                root,
                store=LocalStore(tmp_path),
                max_token_ttl_seconds=900,
                publish_lead_seconds=0,
                clock=clock,
            )
            for _ in range(2)
        ]
        new = kid_for(signers.add_key())
        await first.publish(new)
        # The second worker has not seen the change yet: its own publish is refused, and the
        # first one's stands.
        with pytest.raises(KeyRingConflictError, match="another worker"):
            await second.publish(new)
        assert await second.adopt()
        assert second.next_kid == new
        await second.activate()
        assert await first.adopt()
        assert first.active_kid == new

    asyncio.run(run())


def test_workers_share_one_bucket(tmp_path: Path) -> None:
    rate, burst = 5.0, 10

    async def run() -> int:
        limiters = [
            SharedRateLimiter(
                LocalStore(tmp_path),
                rate_per_second=rate,
                burst=burst,
                fallback=RateLimiter(rate_per_second=rate, burst=burst),
            )
            for _ in range(2)
        ]
        accepted = 0
        started = time.monotonic()
        while time.monotonic() - started < 0.5:
            for limiter in limiters:
                allowed, _ = await limiter.allow("subject\x1fspiffe\x1fspiffe://prod.test/a")
                accepted += allowed
        assert accepted <= burst + rate * (time.monotonic() - started) + 1
        return accepted

    assert asyncio.run(run()) >= burst


@pytest.mark.parametrize("turns", range(6))
def test_the_sync_loop_ends_when_cancelled_whichever_turn_a_wake_up_comes_in(
    tmp_path: Path, turns: int
) -> None:
    """A stopping gateway cancels the loop and waits for it. With asyncio.wait_for around the
    wake-up, Python 3.11 loses the cancellation when the wake-up lands in the same turn
    (CPython gh-86296) and the gateway never stops; each turn from 0 to 5 is tried."""

    async def run() -> None:
        state = state_in(tmp_path)
        task = asyncio.create_task(state.run())
        while not state.fresh():
            await asyncio.sleep(0.005)
        await asyncio.sleep(0)  # now waiting for a wake-up or the next poll
        state._wake.set()  # what an announcement from the store does
        for _ in range(turns):
            await asyncio.sleep(0)
        task.cancel()
        await asyncio.wait({task}, timeout=2)
        assert task.cancelled()

    asyncio.run(run())
