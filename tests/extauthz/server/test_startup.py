"""Start-up with a dependency down or wrong (extauthz.server.startup), the gateway in this process,
the signers and Redis real: Redis down at start, a key ring that does not verify from the trust
root, and a key whose threshold is below FROST_T. Each time the gateway stays up, not ready, says
why per dependency and denies every Check with 503 not_ready; the first two become ready once the
dependency is right, without a restart.
(tests/e2e/test_startup.py starts the real gateway process with the signers down.)"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from extauthz.config import GatewaySettings
from extauthz.dev.calls import check_request
from extauthz.dev.settings import (
    OIDC_AUDIENCE,
    TRUST_DOMAIN,
    root_ca,
    stack_env,
    valid_now,
    write_trust_root,
)
from extauthz.server.app import build_gateway
from extauthz.server.gateway import Gateway
from tests.helpers.certs import CertificateAuthority, pem
from tests.helpers.redis_server import RedisServer
from tests.signer.harness import SignerCluster


@contextlib.asynccontextmanager
async def starting_gateway(
    directory: Path, **overrides: str
) -> AsyncIterator[tuple[Gateway, CertificateAuthority]]:
    """Real signers up; the gateway built without waiting, its start-up in the background."""
    ca = root_ca(TRUST_DOMAIN)
    (directory / "trust-bundle.pem").write_bytes(pem(ca.certificate))
    cluster = SignerCluster(directory, 2, 3)
    assert cluster.package is not None
    env = {
        **stack_env(directory, "https://issuer.invalid"),
        "KEYMINT_OIDC_AUDIENCES": OIDC_AUDIENCE,
        "KEYMINT_TRUST_ROOT": str(write_trust_root(directory, cluster.package.group_public_key)),
        **overrides,
    }
    for signer in cluster.signers.values():
        signer.env.update(env)
    await asyncio.to_thread(cluster.start)
    signers = ",".join(f"{i}={p.address}" for i, p in sorted(cluster.signers.items()))
    settings = GatewaySettings.from_env({**env, "KEYMINT_SIGNERS": signers})
    gateway = await build_gateway(settings, wait=False)
    tasks = [asyncio.create_task(gateway.startup.run()), asyncio.create_task(gateway.state.run())]
    try:
        yield gateway, ca
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await gateway.close()
        await asyncio.to_thread(cluster.stop)


async def until(condition: Callable[[], bool], timeout: float) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, "not within the time allowed"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def denied_not_ready(gateway: Gateway, ca: CertificateAuthority) -> None:
    svid = ca.issue_svid(f"spiffe://{TRUST_DOMAIN}/ns/shop/sa/web", **valid_now())
    response = await gateway.pipeline.check(check_request(certificate=svid, route_key="orders"))
    assert response.denied_response.status.code == 503
    assert json.loads(response.denied_response.body)["error"] == "not_ready"


def test_redis_down_at_start_then_ready_once_it_answers(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path)  # its port chosen, nothing listening there yet

    async def scenario() -> None:
        async with starting_gateway(tmp_path, KEYMINT_REDIS_URL=redis.url) as (gateway, ca):
            await asyncio.sleep(1.5)
            report = gateway.readiness.report()
            assert report["status"] == "not_ready"
            assert report["reason"] == "starting"
            dependencies = report["dependencies"]
            assert dependencies["shared_state"] == {  # type: ignore[index]
                "ready": False,
                "detail": f"{redis.url.removesuffix('/0')}/0: not reached yet",
            }
            assert "cannot read the key ring" in dependencies["key_ring"]["detail"]  # type: ignore[index]
            await denied_not_ready(gateway, ca)

            await asyncio.to_thread(redis.start)
            took = await until(gateway.ready, timeout=5.0)
            print(f"\nready {took:.2f} s after Redis answered")
            assert gateway.readiness.report()["status"] == "ready"

    try:
        asyncio.run(scenario())
    finally:
        redis.stop()


def test_a_key_ring_that_does_not_verify_keeps_the_gateway_not_ready_saying_why(
    tmp_path: Path,
) -> None:
    """A ring in the state directory whose active key is not endorsed from the root: nothing is
    minted under it; once an operator removes it, the gateway starts from the root's key."""
    state = tmp_path / "gateway-state"
    state.mkdir()
    ring = state / "keyring.json"
    ring.write_text(
        json.dumps(
            {
                "version": 1,
                "issuer": "https://keymint.test",
                "roots": [],
                "endorsements": [],
                "active": "a-key-nobody-endorsed",
                "next": None,
                "retiring": [],
            }
        )
    )

    async def scenario() -> None:
        async with starting_gateway(tmp_path) as (gateway, ca):
            await asyncio.sleep(1.0)
            report = gateway.readiness.report()
            assert report["status"] == "not_ready"
            detail = report["dependencies"]["key_ring"]["detail"]  # type: ignore[index]
            assert "the active key a-key-nobody-endorsed is not trusted from the root" in detail
            await denied_not_ready(gateway, ca)

            ring.unlink()
            await until(gateway.ready, timeout=5.0)
            svid = ca.issue_svid(f"spiffe://{TRUST_DOMAIN}/ns/shop/sa/web", **valid_now())
            allowed = await gateway.pipeline.check(
                check_request(certificate=svid, route_key="orders")
            )
            assert allowed.HasField("ok_response")

    asyncio.run(scenario())


def test_a_key_below_frost_t_keeps_the_gateway_not_ready_saying_why(tmp_path: Path) -> None:
    """The signers hold a 2-of-3 key, the deployment says FROST_T=3: any two signers could sign
    with that key, so the gateway never adopts it and mints nothing."""

    async def scenario() -> None:
        async with starting_gateway(tmp_path, FROST_T="3") as (gateway, ca):
            await asyncio.sleep(1.0)
            report = gateway.readiness.report()
            assert report["status"] == "not_ready"
            assert report["reason"] == "starting"
            detail = report["dependencies"]["key_ring"]["detail"]  # type: ignore[index]
            assert (
                "reported by 3 signer(s) [1, 2, 3], refused: its threshold 2 is below the "
                "deployment's 3"
            ) in detail
            await denied_not_ready(gateway, ca)
            assert not gateway.ready()

    asyncio.run(scenario())
