"""A local IdP (the real protocols, on 127.0.0.1) and a manual clock that its sleeps advance."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator

import aiohttp
import pytest

from tests.helpers import ManualClock, Run
from tests.helpers.idp import DEFAULT_USERS, LocalIdp
from tests.helpers.token_issuers import JwtKey

START = 1_900_000_000.0


@pytest.fixture(scope="session")
def idp_key() -> JwtKey:
    return JwtKey.generate("idp-1", "RS256")


@pytest.fixture
def run() -> Iterator[Run]:
    with asyncio.Runner() as runner:
        yield runner.run


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def idp(run: Run, clock: ManualClock, idp_key: JwtKey) -> Iterator[LocalIdp]:
    provider = run(LocalIdp(key=idp_key, users=DEFAULT_USERS, clock=clock).start())
    yield provider
    run(provider.stop())


@pytest.fixture
def session(run: Run) -> Iterator[aiohttp.ClientSession]:
    async def open_session() -> aiohttp.ClientSession:
        return aiohttp.ClientSession()

    opened = run(open_session())
    yield opened
    run(opened.close())


def sleeper(
    clock: ManualClock, during: Callable[[int], None] = lambda n: None
) -> Callable[[float], Awaitable[None]]:
    """A sleep that moves the manual clock; `during(n)` runs at the n-th pause (1-based), as
    the user would act at the IdP while the command waits."""
    pauses = 0

    async def sleep(seconds: float) -> None:
        nonlocal pauses
        pauses += 1
        clock.advance(seconds)
        during(pauses)

    return sleep
