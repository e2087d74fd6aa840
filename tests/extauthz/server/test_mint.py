"""Minting: the token cache serves a token only while it is still what policy grants."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass

from extauthz.model import Evidence, Grant, Identity, IdentityKind, Route
from extauthz.policy import AuthzRequest
from extauthz.server.mint import Minter, MintSettings
from extauthz.server.tokencache import TokenCache

IDENTITY = Identity(
    kind=IdentityKind.SPIFFE,
    subject="spiffe://prod.test/ns/shop/sa/web",
    issuer="prod.test",
    credential_hash="cd" * 32,
    expires_at=int(time.time()) + 3600,
    evidence=Evidence("certificate", b"-----BEGIN CERTIFICATE-----"),
)
REQUEST = AuthzRequest(IDENTITY, Route("api.internal", "/orders", "GET"))
GRANT = Grant("https://orders.internal", ("orders:read",), 600, "shop-reads-orders")
POLICY = "0" * 64


@dataclass
class Outcome:
    signature: bytes
    signers: tuple[int, ...]


class CountingSigner:
    def __init__(self) -> None:
        self.calls = 0

    async def sign(self, message: bytes, **_: object) -> Outcome:
        self.calls += 1
        return Outcome(b"\x01" * 64, (1, 2))


def test_a_policy_that_shortens_the_lifetime_takes_effect_at_once() -> None:
    async def run() -> tuple[list[bool], list[int], int]:
        signer = CountingSigner()
        minter = Minter(
            settings=MintSettings(issuer="https://keymint.test"),
            signer=signer,
            group_public_key=lambda: b"\x02" * 32,
            cache=TokenCache(),
        )
        shorter = dataclasses.replace(GRANT, ttl_seconds=120)
        outcomes = [
            await minter.mint(REQUEST, GRANT, POLICY),
            await minter.mint(REQUEST, GRANT, POLICY),
            await minter.mint(REQUEST, shorter, POLICY),
            await minter.mint(REQUEST, shorter, POLICY),
        ]
        return [cached for _, cached in outcomes], [t.lifetime for t, _ in outcomes], signer.calls

    cached, lifetimes, signatures = asyncio.run(run())

    assert cached == [False, True, False, True]
    assert lifetimes == [600, 600, 120, 120]
    assert signatures == 2
