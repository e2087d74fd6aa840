"""A local IdP (the real protocols, on 127.0.0.1) and a manual clock that its sleeps advance; and,
for the end-to-end tests, the real stack with the workloads around it (`live`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from extauthz.dev.idp import DEFAULT_USERS, LocalIdp
from extauthz.dev.inprocess import Stack, running_stack
from extauthz.dev.issuers import JwtKey
from extauthz.dev.servers import BackgroundLoop
from extauthz.dev.settings import DEPLOY, ISSUER
from extauthz.dev.workloads import CLIENT_ID, Workloads
from extauthz.server.http_edge import start_http
from extauthz.tools.login.command import LoginOptions
from tests.helpers import ManualClock, Run

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


@dataclass
class Live:
    loop: BackgroundLoop
    stack: Stack
    workloads: Workloads
    token_url: str

    @property
    def idp(self) -> LocalIdp:
        return self.workloads.idp

    def options(self, **changes: object) -> LoginOptions:
        base = LoginOptions(
            idp=self.idp.issuer,
            client_id=CLIENT_ID,
            token_url=self.token_url,
            audience=DEPLOY,
            scope="deploy:read",
            allow_http=True,
        )
        return replace(base, **changes)  # type: ignore[arg-type]

    def claims(self, token: str) -> dict[str, object]:
        key = Ed25519PublicKey.from_public_bytes(self.stack.gateway.group_public_key)
        claims: dict[str, object] = jwt.decode(
            token, key, algorithms=["EdDSA"], audience=DEPLOY, issuer=ISSUER
        )
        return claims


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    directory = tmp_path_factory.mktemp("login")
    loop = BackgroundLoop()
    workloads = loop.run(Workloads.start(directory, idp_interval=1))
    context = running_stack(directory, oidc_issuer=workloads.github, **workloads.env())
    try:
        stack = loop.run(context.__aenter__(), timeout=120)
        runner, port = loop.run(start_http(stack.gateway, "127.0.0.1:0"))
        yield Live(loop, stack, workloads, f"http://127.0.0.1:{port}/token")
        loop.run(runner.cleanup())
        loop.run(context.__aexit__(None, None, None), timeout=60)
    finally:
        loop.run(workloads.stop())
        loop.close()
