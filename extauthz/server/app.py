"""The composition root: settings in, a running gateway out (gRPC Check and the HTTP edge).

Everything is built once at start from `GatewaySettings`; nothing below reads the environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Callable, Mapping

import aiohttp

from extauthz.config import GatewaySettings, SettingsError
from extauthz.errors import ExtAuthzError
from extauthz.identity import (
    IdentityConfigError,
    JwksSettings,
    JwtVerifier,
    TrustBundle,
    TrustedProxies,
    X509Verifier,
    XfccIdentifier,
)
from extauthz.policy import (
    Limits,
    PolicyEngine,
    PolicyStore,
    RegoPolicy,
    ReloadOutcome,
    ReloadResult,
    parse_policy,
)
from extauthz.policy.model import Policy
from extauthz.server.gateway import Gateway
from extauthz.server.keyring import KeyRing, KeyRingError, RotationError, load_trust_root
from extauthz.server.limits import RateLimiter, Revocations, SharedRateLimiter, StateUnavailable
from extauthz.server.metrics import KEY_TIMES, READY
from extauthz.server.mint import Minter, MintSettings
from extauthz.server.own_tokens import OwnTokenVerifier
from extauthz.server.pipeline import NOT_READY, Identifier, Pipeline
from extauthz.server.startup import KeyRingSlot, Readiness, Startup, watch_health
from extauthz.server.state import LocalStore, SharedState, StateSettings, StateStore
from extauthz.server.tokencache import TokenCache
from signer import tracing
from signer.audit import AsyncAuditLog, AuditLog
from signer.coordinator import Coordinator, CoordinatorSettings, SignerEndpoint
from signer.devca import tls_files
from signer.endorsement import TrustRoot
from signer.frost import PublicKeyPackage
from signer.metrics import QUORUM_NEEDED, QUORUM_USABLE
from signer.stopping import stop_on_signals
from signer.token import kid_for

log = logging.getLogger(__name__)


KEYRING_FILE = "keyring.json"


class StartError(ExtAuthzError):
    """The gateway cannot start listening (a port in use, an address not on this host)."""


def build_identifier(
    settings: GatewaySettings, session: aiohttp.ClientSession, clock: Callable[[], float]
) -> Identifier:
    oidc = None
    if settings.jwt_issuers:
        try:
            oidc = JwtVerifier.from_configs(
                settings.jwt_issuers,
                session=session,
                jwks_settings=JwksSettings(
                    insecure_allow_http=settings.oidc_allow_http,
                    fetch_timeout_seconds=settings.jwks_fetch_timeout,
                ),
                clock=clock,
            )
        except IdentityConfigError as exc:  # e.g. a JWKS file that cannot be read
            raise SettingsError("KEYMINT_ISSUERS_FILE", str(exc)) from None
    bundles = [
        TrustBundle.from_pem(domain, path.read_bytes())
        for domain, path in sorted(settings.spiffe_bundles.items())
    ]
    certificates = None
    xfcc = None
    if bundles:
        certificates = X509Verifier(spiffe_bundles=bundles, clock=clock)
        if settings.trusted_proxies:
            xfcc = XfccIdentifier(
                trusted_proxies=TrustedProxies.parse(settings.trusted_proxies),
                certificates=certificates,
            )
    return Identifier(oidc=oidc, certificates=certificates, xfcc=xfcc)


def build_policy_engine(
    settings: GatewaySettings, on_reload: Callable[[], None] = lambda: None
) -> tuple[PolicyEngine, PolicyStore[Policy] | None, PolicyStore[RegoPolicy] | None]:
    """The engine over reloadable JSON and Rego policies (either may be absent); `on_reload`
    runs whenever either one swaps in a new policy (the gateway clears its hot cache there)."""

    def swapped(result: ReloadResult) -> None:
        if result.outcome is ReloadOutcome.SWAPPED:
            on_reload()

    policy = (
        PolicyStore(
            settings.policy_file,
            load=lambda content, source: parse_policy(content, source),
            on_reload=swapped,
        )
        if settings.policy_file
        else None
    )
    rego = (
        PolicyStore(
            settings.rego_file, load=RegoPolicy.loader(settings.rego_query), on_reload=swapped
        )
        if settings.rego_file
        else None
    )
    engine = PolicyEngine(
        limits=Limits(settings.allowed_scopes, settings.default_ttl_seconds),
        policy=policy,
        rego=rego,
        headers=settings.policy_headers,
        per_request_input=settings.policy_per_request_input,
    )
    return engine, policy, rego


def trust_root_of(settings: GatewaySettings) -> TrustRoot:
    """The trust root operators pinned (KEYMINT_TRUST_ROOT); a gateway never starts without it."""
    if settings.trust_root is None:
        raise SettingsError(
            "KEYMINT_TRUST_ROOT",
            "is required: the JSON document of the issuer and the first group key(s), from which "
            "every published key must be endorsed",
        )
    try:
        return load_trust_root(settings.trust_root, settings.issuer)
    except KeyRingError as exc:
        raise SettingsError("KEYMINT_TRUST_ROOT", str(exc)) from None


def build_store(settings: GatewaySettings) -> StateStore:
    """Redis when KEYMINT_REDIS_URL is set (replicas share it), else the state directory."""
    if settings.redis is not None:
        from extauthz.server.state.redis_store import RedisStore
        from signer.redisconn import RedisSettingsError

        try:
            return RedisStore(settings.redis)
        except RedisSettingsError as exc:
            raise SettingsError(exc.variable, exc.problem) from None
    return LocalStore(settings.state_dir)


class KeyThresholdError(ExtAuthzError):
    """The active group key needs fewer signers than this deployment's FROST_T."""


def build_coordinator(settings: GatewaySettings) -> Coordinator:
    """The coordinator of the signers; it connects on its first call, not here. It adopts no key
    that fewer than FROST_T signers could sign with."""
    return Coordinator(
        endpoints=[SignerEndpoint(s.identifier, s.address) for s in settings.signers],
        tls=tls_files(settings.tls_dir, "coordinator"),
        threshold=settings.frost_t,
        settings=CoordinatorSettings(attempt_timeout=settings.signer_attempt_timeout),
    )


def check_threshold(frost_t: int, kid: str, package: PublicKeyPackage) -> None:
    """Refuse an active key whose threshold is below FROST_T (KeyThresholdError); accept a
    higher one with a warning.

    Below: fewer signers than the deployment promises could sign with it, so the gateway does
    not mint with it (start-up keeps retrying and /readyz says why). The coordinator already
    adopts no such key; this is the same rule where the key ring is loaded, so a coordinator
    built some other way cannot make the gateway ready on one.
    Above: every signature still takes the key's own threshold of shares (the coordinator asks
    that many), so nothing the deployment promises is weakened; only availability is less than
    FROST_T suggests, which operators chose when they reshared to it. Refusing would take every
    gateway down after a reshare that raised the threshold, until FROST_T were edited."""
    if package.min_participants < frost_t:
        raise KeyThresholdError(
            f"the active key {kid} needs {package.min_participants} signer(s) to sign, fewer "
            f"than FROST_T ({frost_t}): not minting with it"
        )
    if package.min_participants > frost_t:
        log.warning(
            "FROST_T is %d but the active key %s needs %d signers; every signature takes %d",
            frost_t,
            kid,
            package.min_participants,
            package.min_participants,
        )


def build_rate_limiter(
    settings: GatewaySettings, store: StateStore
) -> RateLimiter | SharedRateLimiter:
    """Buckets in this process for one replica of one worker; else in the shared store."""
    local = RateLimiter(rate_per_second=settings.rate_per_second, burst=settings.rate_burst)
    if not store.shared and settings.workers == 1:
        return local
    return SharedRateLimiter(
        store, rate_per_second=settings.rate_per_second, burst=settings.rate_burst, fallback=local
    )


async def build_gateway(
    settings: GatewaySettings, *, clock: Callable[[], float] = time.time, wait: bool = True
) -> Gateway:
    """The gateway, built without reaching anything but the state store once. The audit log is
    opened first: a gateway that could not record what it mints does not start, nor reach signers
    or Redis. If any part fails, what was built before it is closed again. With `wait`, start-up
    runs to its end here (the key ring loaded); without, `serve` runs it in the background."""
    root = trust_root_of(settings)
    async with contextlib.AsyncExitStack() as built:
        settings.audit_log.parent.mkdir(parents=True, exist_ok=True)
        audit = AsyncAuditLog(AuditLog(settings.audit_log, clock=clock))
        built.callback(audit.log.close)
        store = build_store(settings)
        built.push_async_callback(store.close)
        coordinator = build_coordinator(settings)
        slot = KeyRingSlot(coordinator)
        built.push_async_callback(slot.close)
        revocations = Revocations(clock=clock)

        async def adopt_keyring() -> None:
            await slot.adopt()

        state = SharedState(
            store,
            revocations,
            StateSettings(settings.state_sync_seconds, settings.state_max_staleness_seconds),
            on_keyring=adopt_keyring,
        )
        if not await state.sync_once():
            log.warning("starting without shared state: refusing every request until it answers")
        resets: list[Callable[[], None]] = []

        def reset_all() -> None:
            for reset in resets:
                reset()

        engine, policy, rego = build_policy_engine(settings, reset_all)
        token_cache = TokenCache()
        if settings.redis is not None:
            from extauthz.server.state.redis_store import RedisStore

            assert isinstance(store, RedisStore)
            token_cache = TokenCache.on_redis(store.client)
        minter = Minter(
            settings=MintSettings(
                issuer=settings.issuer,
                default_ttl_seconds=settings.default_ttl_seconds,
                sign_timeout=settings.sign_timeout,
                policy_credential_headers=settings.policy_headers.credentials,
            ),
            signer=slot,
            group_public_key=lambda: slot.active_key,
            cache=token_cache,
            clock=clock,
            published_keys=slot.published_keys,
        )
        session = aiohttp.ClientSession()
        built.push_async_callback(session.close)
        pipeline = Pipeline(
            identifier=build_identifier(settings, session, clock),
            engine=engine,
            minter=minter,
            revocations=revocations,
            rate_limiter=build_rate_limiter(settings, store),
            audit=audit,
            own_tokens=OwnTokenVerifier(
                issuer=settings.issuer,
                group_keys=slot.published_keys,
                clock=clock,
            ),
            clock=clock,
            fresh=state.fresh,
        )
        resets.append(pipeline.hot.clear)  # a new policy must not be bypassed by cached decisions
        pipeline.hold(NOT_READY)  # until the key ring is loaded

        def vet(ring: KeyRing) -> None:
            kid = ring.active_kid
            check_threshold(settings.frost_t, kid, coordinator.package_for(kid))

        def loaded(ring: KeyRing) -> None:
            pipeline.release()

        startup = Startup(
            slot=slot,
            root=root,
            store=store,
            # With Redis, a local copy to start from while Redis is down; without, the store is
            # that very file.
            cache=settings.state_dir / KEYRING_FILE if store.shared else None,
            max_token_ttl_seconds=settings.default_ttl_seconds,
            publish_lead_seconds=settings.key_publish_lead_seconds,
            clock=clock,
            vet=vet,
            on_loaded=loaded,
        )
        readiness = Readiness(slot=slot, state=state, startup=startup)
        export_gauges(slot, readiness, clock)
        gateway = Gateway(
            settings,
            pipeline,
            policy,
            rego,
            session,
            audit,
            token_cache,
            slot,
            state,
            startup,
            readiness,
        )
        built.pop_all()  # the gateway owns them now (`Gateway.close`)
    if wait:
        try:
            await gateway.start(timeout=30.0)
        except BaseException:
            await gateway.close()
            raise
    return gateway


def export_gauges(slot: KeyRingSlot, readiness: Readiness, clock: Callable[[], float]) -> None:
    """The gauges read at each scrape: quorum, readiness, the keys' publish lead and retirement
    (the alert rules in k8s/monitoring/ read them)."""

    def usable() -> float:
        return slot.coordinator.quorum(slot.active_kid)[0] if slot.loaded else 0

    def needed() -> float:
        return slot.coordinator.quorum(slot.active_kid)[1] if slot.loaded else 0

    QUORUM_USABLE.set_function(usable)
    QUORUM_NEEDED.set_function(needed)
    READY.set_function(lambda: 1.0 if readiness.ready() else 0.0)

    def key_times() -> tuple[tuple[str, float] | None, Mapping[str, float]]:
        return slot.ring.key_times() if slot.loaded else (None, {})

    KEY_TIMES.source = key_times
    KEY_TIMES.clock = clock


async def _prune_keys(gateway: Gateway, interval: float = 60.0) -> None:
    """Drop rotated-out keys from the JWKS once their last token has expired."""
    while True:
        await asyncio.sleep(interval)
        try:
            retired = await gateway.keyring.prune()
        except (RotationError, StateUnavailable) as exc:  # another replica pruned first
            log.info("key ring not pruned here: %s", exc)
            continue
        for key in retired:
            log.info("group key %s retired: its last token has expired", kid_for(key))


async def serve(
    settings: GatewaySettings,
    *,
    started: Callable[[int, int], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    from extauthz.server.check_port import preflight
    from extauthz.server.grpc_edge import set_serving, start_grpc
    from extauthz.server.http_edge import start_http

    preflight(settings.check_port)  # a bad certificate path stops the start before anything runs
    settings.observability.start_tracing("keymint-gateway")
    gateway = await build_gateway(settings, wait=False)
    try:
        grpc_server, grpc_port, health_servicer = await start_grpc(
            gateway.pipeline, settings.check_port, reuse_port=settings.workers > 1
        )
        try:
            http_runner, http_port = await start_http(gateway, settings.http_listen)
        except BaseException:
            await grpc_server.stop(grace=None)
            raise
    except OSError as exc:  # a port in use, an address not on this host
        await gateway.close()
        raise StartError(f"cannot listen: {exc.strerror or exc}") from None
    except BaseException:
        await gateway.close()
        raise

    async def set_status(service: str, serving: bool) -> None:
        await set_serving(health_servicer, serving, service)

    watchers = [
        asyncio.create_task(gateway.startup.run()),
        asyncio.create_task(watch_health(gateway.readiness, set_status)),
        asyncio.create_task(_prune_keys(gateway)),
        asyncio.create_task(gateway.state.run()),
    ]
    for store in (gateway.policy, gateway.rego):
        if store is not None:
            watchers.append(asyncio.create_task(store.watch()))
    log.info(
        "gateway listening: gRPC %s (port %d), HTTP port %d; ready once the signers agree on a "
        "key and the key ring is loaded (/readyz)",
        settings.grpc_listen,
        grpc_port,
        http_port,
    )
    # What start-up built (modules, policy, keys, clients) lives as long as the process: kept out
    # of the collector's reach, a full collection no longer walks it while Checks wait (bench-check
    # measured 20-30 us of server CPU per cached Check spent collecting before this).
    gc.freeze()
    if started is not None:
        started(grpc_port, http_port)
    if stop is None:
        stop = asyncio.Event()
        stop_on_signals(stop)  # and from the signal on, STOP_DEADLINE_SECONDS to end
    try:
        await stop.wait()
    finally:
        for task in watchers:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await set_serving(health_servicer, False)
        await grpc_server.stop(grace=1.0)
        await http_runner.cleanup()
        await gateway.close()
        tracing.shutdown()
