"""The running gateway: what `build_gateway` (extauthz.server.app) assembled, and what the edges
(ext_authz, the HTTP edge, the admin endpoints) act on. It imports no edge, so they can name it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from extauthz.config import GatewaySettings
from extauthz.policy import PolicyStore, RegoPolicy
from extauthz.policy.model import Policy
from extauthz.server.pipeline import Pipeline
from extauthz.server.startup import KeyRingSlot, NotStarted, Readiness, Startup
from extauthz.server.state import SharedState
from extauthz.server.tokencache import TokenCache
from signer.audit import AsyncAuditLog
from signer.token import kid_for

log = logging.getLogger(__name__)


@dataclass
class Gateway:
    settings: GatewaySettings
    pipeline: Pipeline
    policy: PolicyStore[Policy] | None
    rego: PolicyStore[RegoPolicy] | None
    session: aiohttp.ClientSession
    audit: AsyncAuditLog
    token_cache: TokenCache
    keyring: KeyRingSlot  # the key ring once start-up has loaded it
    state: SharedState
    startup: Startup
    readiness: Readiness
    started_at: float = field(default_factory=time.time)

    @property
    def group_public_key(self) -> bytes:
        return self.keyring.active_key

    def ready(self) -> bool:
        return self.readiness.ready()

    async def start(self, timeout: float | None = None) -> None:
        """Run start-up to its end: the key ring loaded (NotStarted after `timeout` seconds).
        `serve` runs it in the background instead, serving 503 not_ready meanwhile."""
        if not self.keyring.loaded:
            try:
                await asyncio.wait_for(self.startup.run(), timeout)
            except TimeoutError:
                raise NotStarted() from None
        # As a started coordinator did: give the nonce pools a moment to fill.
        deadline = time.monotonic() + 5.0
        while not self.keyring.ready() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    async def publish_key(self, kid: str, jwk: Mapping[str, Any] | None = None) -> bytes:
        """Rotation step 1: t signers endorse key `kid` (added by a DKG among them) with the
        active key; it joins the JWKS, and nothing signs with it yet."""
        return await self.keyring.publish(kid, jwk)

    async def activate_next_key(self) -> bytes:
        """Rotation step 2: mint with the published key; the old one stays until its tokens die."""
        key = await self.keyring.activate()
        log.info("minting with group key %s from now on", kid_for(key))
        return key

    async def close(self) -> None:
        await self.keyring.close()
        await self.session.close()
        await self.token_cache.close()
        await self.state.store.close()
        self.audit.log.close()
