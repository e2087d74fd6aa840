"""The replicas tests' stack: extauthz.dev.replicas with three replicas, a low rate limit to hit,
quick state syncs, and a second key sealed into every signer for the rotation test; what the tests
do to it (revocations through one replica, every replica killed and restarted) and `Rogue`, the
gateway's own code pointed at the signers as a compromised gateway would.

The tests run in file order on one stack (tests/replicas/conftest.py): the last one kills Redis.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from extauthz.config import GatewaySettings
from extauthz.dev import replicas
from extauthz.dev.certs import IssuedCertificate
from extauthz.dev.signers import SignerCluster
from extauthz.model import Route
from extauthz.policy import AuthzRequest, Denial
from extauthz.server.app import build_identifier, build_policy_engine
from extauthz.server.claims import confirmation_claim, provenance_claims
from extauthz.server.mint import evidence_message
from signer.coordinator import Coordinator
from signer.frost import trusted_dealer_keygen
from signer.token import header_for, signing_input

REPLICAS = 3
RATE_PER_SECOND = 5
RATE_BURST = 10
MAX_STALENESS_SECONDS = 2.0
SYNC_SECONDS = 0.25
PUBLISH_LEAD_SECONDS = 1
GATEWAY_ENV = {
    "KEYMINT_RATE_PER_SECOND": str(RATE_PER_SECOND),
    "KEYMINT_RATE_BURST": str(RATE_BURST),
    "KEYMINT_STATE_SYNC_SECONDS": str(SYNC_SECONDS),
    "KEYMINT_STATE_MAX_STALENESS_SECONDS": str(MAX_STALENESS_SECONDS),
    "KEYMINT_KEY_PUBLISH_LEAD_SECONDS": str(PUBLISH_LEAD_SECONDS),
}


@dataclass
class ReplicasStack(replicas.ReplicasStack):
    second_key: bytes = b""  # a key every signer holds beside the first, for the rotation test

    def revoke(self, replica: int, **document: object) -> tuple[int, dict[str, Any]]:
        status, _, body = self.http(replica, "POST", "/admin/revoke", document)
        answer: dict[str, Any] = json.loads(body)
        return status, answer

    def kill_replicas(self) -> None:
        for gateway in self.gateways:
            gateway.kill()

    def start_replicas(self) -> None:
        for gateway in self.gateways:
            gateway.start()

    def rogue(self, certificate: IssuedCertificate) -> Rogue:
        """The gateway's code and coordinator credentials, ready to ask each pair of signers for
        an honest token for `certificate`'s caller (connected now, so asking later is one round
        trip)."""
        return self.background.run(Rogue.start(self, certificate), timeout=60)


class Rogue:
    """What every replica would send the signers for one caller, sent by hand."""

    PAIRS = ((1, 2), (2, 3), (1, 3))

    def __init__(self, stack: ReplicasStack, build: Any, coordinators: dict[Any, Any]) -> None:
        self._stack = stack
        self._build = build
        self._coordinators = coordinators

    @classmethod
    async def start(cls, stack: ReplicasStack, certificate: IssuedCertificate) -> Rogue:
        import aiohttp

        settings = GatewaySettings.from_env({**stack.env, "KEYMINT_SIGNERS": ""})
        async with aiohttp.ClientSession() as session:
            identifier = build_identifier(settings, session, time.time)
        engine = build_policy_engine(settings)[0]
        assert identifier.certificates is not None
        identity = identifier.certificates.verify_envoy_certificate(
            urllib.parse.quote(certificate.pem.decode(), safe="")
        )
        route = Route("api.internal", "/v1/orders", "GET", {"route": "orders"})
        authz = AuthzRequest(identity, route)
        snapshot = engine.snapshot()
        grant = engine.evaluate(authz, snapshot)
        assert not isinstance(grant, Denial), grant
        coordinators = {}
        for pair in cls.PAIRS:
            coordinator = Coordinator(
                endpoints=stack.cluster.endpoints(pair),
                tls=stack.cluster.coordinator_tls,
                threshold=stack.cluster.threshold,
            )
            await coordinator.start()
            coordinators[pair] = coordinator

        def build(key: bytes) -> tuple[bytes, Any]:
            now = int(time.time())
            claims: dict[str, object] = {
                **provenance_claims(identity),
                "iss": settings.issuer,
                "sub": identity.subject,
                "aud": grant.audience,
                "scope": " ".join(grant.scopes),
                "iat": now,
                "nbf": now,
                "exp": now + 60,
                "jti": str(uuid.uuid4()),
            }
            cnf = confirmation_claim(identity)
            if cnf is not None:
                claims["cnf"] = cnf
            return signing_input(header_for(key), claims), evidence_message(authz, snapshot.digest)

        return cls(stack, build, coordinators)

    def sign(self, pair: tuple[int, int], kid: str) -> object:
        """The signature, or the exception the signers' answers raised."""

        async def attempt() -> object:
            coordinator = self._coordinators[pair]
            key = bytes(coordinator.packages[kid].group_public_key)
            message, evidence = self._build(key)
            try:
                return await coordinator.sign(message, evidence=evidence, timeout=5)
            except Exception as exc:  # the signers' answer is what the test reads
                return exc

        return self._stack.background.run(attempt(), timeout=30)

    def close(self) -> None:
        async def close_all() -> None:
            for coordinator in self._coordinators.values():
                await coordinator.close()

        self._stack.background.run(close_all())


def _seal_second_key(keys: list[bytes]) -> Callable[[SignerCluster], None]:
    def prepare(cluster: SignerCluster) -> None:
        shares, package, _ = trusted_dealer_keygen(2, 3)
        for share in shares:
            cluster.seal_key(share.identifier, share, package)
        keys.append(bytes(package.group_public_key))

    return prepare


@contextlib.contextmanager
def replicas_stack(directory: Path) -> Iterator[ReplicasStack]:
    second: list[bytes] = []
    settings = replicas.ReplicaSettings(
        replicas=REPLICAS, gateway_env=GATEWAY_ENV, prepare=_seal_second_key(second)
    )
    with replicas.replicas_stack(directory, settings=settings, kind=ReplicasStack) as stack:
        (stack.second_key,) = second
        yield stack


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.02) -> float:
    """Seconds until `predicate()` held (polled every `interval`); AssertionError after timeout."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s")
        time.sleep(interval)
    return time.monotonic() - started
