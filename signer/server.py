"""The signer process: settings from the environment, the share unsealed, the services served.

The guard's evidence checker is composed in by name (`--evidence-checker module:factory`), so the
gateway's identity and policy code runs here without `signer` importing it. A checker that holds
resources (the gateway's holds an HTTP session for issuers' keys) offers `async close()`, which the
signer calls when it stops, after the server has stopped answering.

Key ceremonies are served only to the operators named in KEYMINT_OPERATOR_IDS, never to the
coordinator (whose credentials the gateway holds); the trusted dealer only with
KEYMINT_DEV_ALLOW_TRUSTED_DEALER=true; replacing a held key only with a local approval in
`<state dir>/approvals` (signer.ceremony.approvals). FROST_T, the deployment's threshold (the
gateway's setting), is the least any ceremony may make a key need and any key may need to sign.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from signer.audit import AsyncAuditLog, AuditLog
from signer.budget import BudgetSettings, EvidenceBudget
from signer.ceremony import CeremonyServicer, add_to_server
from signer.ceremony.approvals import ReplaceApprovals
from signer.devca import TlsFiles, signer_name, spiffe_id, tls_files
from signer.endorsement import ENDORSEMENT_TYP, Endorsement
from signer.endorsement_guard import check_endorsement
from signer.errors import SignerError
from signer.guard import (
    AcceptedToken,
    EvidenceChecker,
    Guard,
    GuardEvidence,
    GuardLimits,
    RevocationList,
)
from signer.keyfiles import KeyFileError, KeyFiles
from signer.keystate import KeyState, message_header
from signer.observability import OBSERVABILITY_SETTINGS, ObservabilityError, ObservabilitySettings
from signer.proto import signer_pb2_grpc
from signer.redisconn import REDIS_SETTINGS, RedisSettings, RedisSettingsError, connect
from signer.revocations import (
    AnyRevocations,
    LearnedRevocations,
    RedisRevocationFollower,
    RevocationFile,
    RevocationFileError,
)
from signer.service import SignerService
from signer.settings import (
    Kind,
    Problem,
    Problems,
    Setting,
    config_file_setting,
    listen_setting,
    render,
    schema_of,
)
from signer.stopping import stop_on_signals
from signer.tls import SERVER_OPTIONS, server_credentials
from signer.vault.base import ShareVault
from signer.vault.config import VAULT_SETTINGS, open_vault, parse_vault_config

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger(__name__)

LEARNED_REVOCATIONS_FILE = "learned-revocations.json"
EvidenceCheckerFactory = Callable[[Mapping[str, str]], EvidenceChecker]


class SignerSettingsError(SignerError):
    """The signer's configuration is refused: `problems` holds every problem found, one line
    each in the message; `setting` is the first one's."""

    def __init__(self, setting: str, problem: str, *, example: str = "") -> None:
        self.setting = setting
        self.problem = problem
        self.problems: tuple[Problem, ...] = (Problem(setting, problem, example),)
        super().__init__(f"{setting}: {problem}")

    @classmethod
    def of(cls, problems: Sequence[Problem]) -> SignerSettingsError:
        first = problems[0]
        error = cls(first.setting, first.problem, example=first.example)
        error.problems = tuple(problems)
        error.args = (render(problems),)
        return error


@dataclass(frozen=True, slots=True)
class SignerSettings:
    identifier: int
    listen: str
    tls: TlsFiles
    share_file: Path
    audit_log: Path
    issuer: str
    max_ttl_seconds: int
    coordinator_id: str
    evidence_checker: str  # "module:factory"
    state_dir: Path
    operator_ids: frozenset[str]  # empty: no ceremony is served
    allow_trusted_dealer: bool
    # The deployment's threshold (FROST_T, the gateway's setting of the same name): no ceremony
    # makes a key below it, and no key below it signs.
    min_threshold: int = 2
    revocations_file: Path | None = None
    budget: BudgetSettings = field(default_factory=BudgetSettings)
    redis: RedisSettings | None = None  # follow the gateways' revocations (read only)
    # Logs (KEYMINT_LOG_FORMAT, KEYMINT_LOG_LEVEL) and tracing (KEYMINT_TRACING...).
    observability: ObservabilitySettings = field(default_factory=ObservabilitySettings)

    @property
    def package_file(self) -> Path:
        """The legacy single key's public key package, beside `share_file`."""
        return self.share_file.with_name(self.share_file.name + ".pub")

    @property
    def keys_dir(self) -> Path:
        """One sealed share per key held (`signer.keyfiles`), beside the legacy share file."""
        return self.share_file.parent / "keys"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SignerSettings:
        """Every setting read and checked; SignerSettingsError holds every problem found."""
        p = Problems(
            SIGNER_SCHEMA,
            (SignerSettingsError, RedisSettingsError, ObservabilityError),
        )
        identifier = p.attempt(lambda: _int(env, "KEYMINT_SIGNER_ID", None), 0)
        state = Path(env.get("KEYMINT_SIGNER_STATE_DIR", f"./state/signer-{identifier}"))
        tls_dir = Path(p.attempt(lambda: _required(env, "KEYMINT_TLS_DIR"), "."))
        coordinator_id = env.get("KEYMINT_COORDINATOR_ID", spiffe_id("coordinator"))
        values: dict[str, Any] = {
            "identifier": identifier,
            "listen": listen_setting(p, env, "KEYMINT_SIGNER_LISTEN", "127.0.0.1:0"),
            "tls": tls_files(tls_dir, signer_name(identifier or 1)),
            "share_file": Path(env.get("KEYMINT_SHARE_FILE", str(state / "share.sealed"))),
            "audit_log": Path(env.get("KEYMINT_SIGNER_AUDIT_LOG", str(state / "audit.jsonl"))),
            "issuer": p.attempt(lambda: _required(env, "KEYMINT_ISSUER"), ""),
            "max_ttl_seconds": p.attempt(lambda: _int(env, "TOKEN_MAX_TTL_SECONDS", 3600), 0),
            "coordinator_id": coordinator_id,
            "evidence_checker": p.attempt(lambda: _required(env, "KEYMINT_EVIDENCE_CHECKER"), ""),
            "state_dir": state,
            "operator_ids": p.attempt(lambda: _operator_ids(env, coordinator_id), frozenset()),
            "allow_trusted_dealer": p.attempt(
                lambda: _bool(env, "KEYMINT_DEV_ALLOW_TRUSTED_DEALER"), False
            ),
            "min_threshold": p.attempt(lambda: _min_threshold(env), 2),
            "revocations_file": _path(env, "KEYMINT_SIGNER_REVOCATIONS_FILE"),
            "budget": BudgetSettings(
                limit=p.attempt(lambda: _int(env, "KEYMINT_EVIDENCE_BUDGET", 32), 32),
                window_seconds=p.attempt(
                    lambda: _int(env, "KEYMINT_EVIDENCE_BUDGET_WINDOW_SECONDS", 900), 900
                ),
            ),
            "redis": p.attempt(lambda: _redis(env), None),
            "observability": p.attempt(lambda: ObservabilitySettings.from_env(env), None),
        }
        if p:
            raise SignerSettingsError.of(p.all)
        return cls(**values)


class KeyedGuard:
    """The guard for whichever held key a message names, so a ceremony's new key is guarded too.

    A key endorsement (typ `keymint-key-endorsement+jwt`) goes to `check_endorsement`; any other
    message is a token for the guard of the key its header names. A token naming no key this
    signer holds goes to the newest key's guard, which refuses it (`header_kid`) after the format
    rules, in `RULES` order.
    """

    def __init__(
        self,
        *,
        key_state: KeyState,
        checker: EvidenceChecker,
        issuer: str,
        max_ttl: int,
        revocations: RevocationList | None = None,
        budget: EvidenceBudget | None = None,
        clock: Callable[[], float] = time.time,
        min_threshold: int = 2,
    ) -> None:
        self._keys = key_state
        self._checker = checker
        self._issuer = issuer
        self._max_ttl = max_ttl
        self._min_threshold = min_threshold
        self._revocations = revocations
        self._budget = budget or EvidenceBudget()
        self._clock = clock
        self._guards: dict[str, Guard] = {}

    async def check(
        self, message: bytes, evidence: GuardEvidence | None
    ) -> AcceptedToken | Endorsement:
        header = message_header(message)  # read once, to route; the checks read it strictly
        if header.get("typ") == ENDORSEMENT_TYP:
            return check_endorsement(
                message,
                keys=self._keys,
                issuer=self._issuer,
                now=self._clock(),
                min_threshold=self._min_threshold,
            )
        kid = header.get("kid")
        key = (self._keys.get(kid) if isinstance(kid, str) else None) or self._keys.current
        guard = self._guards.get(key.kid)
        if guard is None:
            limits = GuardLimits.for_group_key(
                key.package.group_public_key,
                issuer=self._issuer,
                max_ttl_seconds=self._max_ttl,
                threshold=key.package.min_participants,
                min_threshold=self._min_threshold,
            )
            guard = Guard(
                limits=limits,
                evidence_checker=self._checker,
                revocations=self._revocations,
                budget=self._budget,
                clock=self._clock,
            )
            self._guards = {
                kid: g for kid, g in self._guards.items() if self._keys.get(kid) is not None
            }
            self._guards[key.kid] = guard
        return await guard.check_async(message, evidence)


def load_evidence_checker(spec: str, env: Mapping[str, str]) -> EvidenceChecker:
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise SignerSettingsError("KEYMINT_EVIDENCE_CHECKER", f"{spec!r} is not module:factory")
    try:
        factory: EvidenceCheckerFactory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise SignerSettingsError(
            "KEYMINT_EVIDENCE_CHECKER", f"cannot load {spec!r}: {exc}"
        ) from exc
    try:
        return factory(env)
    except Exception as exc:
        # The checker reads the gateway's settings; their errors name the variable themselves
        # (every problem, in `problems`). This package cannot name their type (it never imports
        # the gateway's).
        carried = getattr(exc, "problems", None)
        if carried:
            raise SignerSettingsError.of(list(carried)) from None
        raise SignerSettingsError("KEYMINT_EVIDENCE_CHECKER", f"{spec}: {exc}") from None


def _redis(env: Mapping[str, str]) -> RedisSettings | None:
    try:
        return RedisSettings.from_env(env)
    except RedisSettingsError as exc:
        raise SignerSettingsError(exc.variable, exc.problem) from None


def load_revocations(
    path: Path | None, learned: LearnedRevocations | None = None
) -> RevocationList | None:
    """The operators' file and what Redis taught this signer: revoked if either says so."""
    if learned is not None:
        if path is None:
            return learned
        return AnyRevocations(load_revocations(path) or learned, learned)
    if path is None:
        log.warning(
            "KEYMINT_SIGNER_REVOCATIONS_FILE is not set: this signer keeps no revocation list of "
            "its own, so it would sign for a subject revoked only at the gateway"
        )
        return None
    try:
        return RevocationFile(path)
    except RevocationFileError as exc:
        raise SignerSettingsError("KEYMINT_SIGNER_REVOCATIONS_FILE", exc.problem) from None


def load_key(settings: SignerSettings, vault: ShareVault) -> KeyState:
    """Every key at rest, unsealed; later ceremonies persist to the same place."""
    files = KeyFiles(
        vault,
        settings.keys_dir,
        identifier=settings.identifier,
        legacy_share=settings.share_file,
    )
    try:
        keys = files.load()
    except KeyFileError as exc:
        raise SignerSettingsError("KEYMINT_SIGNER_STATE_DIR", str(exc)) from None
    if not keys:
        log.warning("no key share in %s: waiting for a key ceremony", settings.keys_dir)
    else:
        log.info("holding %d key(s): %s", len(keys), ", ".join(k.kid for k in keys))
    return KeyState(keys, persist=files.persist, discard=files.discard)


async def serve(
    settings: SignerSettings,
    env: Mapping[str, str],
    *,
    started: Callable[[int], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    vault = open_vault(parse_vault_config(env), env=env)
    key_state = load_key(settings, vault)
    checker = load_evidence_checker(settings.evidence_checker, env)
    follower: RedisRevocationFollower | None = None
    learned: LearnedRevocations | None = None
    client: Redis | None = None
    if settings.redis is not None:
        try:
            learned = LearnedRevocations(settings.state_dir / LEARNED_REVOCATIONS_FILE)
        except RevocationFileError as exc:
            raise SignerSettingsError("KEYMINT_SIGNER_STATE_DIR", str(exc)) from None
        try:
            client = connect(settings.redis)
        except RedisSettingsError as exc:
            raise SignerSettingsError(exc.variable, exc.problem) from None
        follower = RedisRevocationFollower(client, learned, where=settings.redis.where)
        await follower.poll_once()
    guard = KeyedGuard(
        key_state=key_state,
        checker=checker,
        issuer=settings.issuer,
        max_ttl=settings.max_ttl_seconds,
        revocations=load_revocations(settings.revocations_file, learned),
        budget=EvidenceBudget(settings.budget),
        min_threshold=settings.min_threshold,
    )
    settings.audit_log.parent.mkdir(parents=True, exist_ok=True)
    audit = AsyncAuditLog(AuditLog(settings.audit_log))
    service = SignerService(
        key_state=key_state,
        guard=guard,
        audit=audit,
        allowed_callers=[settings.coordinator_id],
    )
    server = grpc.aio.server(options=SERVER_OPTIONS)
    signer_pb2_grpc.add_SignerServicer_to_server(service, server)  # type: ignore[no-untyped-call]
    _add_ceremony(server, settings, key_state)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_secure_port(settings.listen, server_credentials(settings.tls))
    await server.start()
    status = health_pb2.HealthCheckResponse.SERVING
    await health_servicer.set("keymint.signer.v1.Signer", status)
    await health_servicer.set("", status)
    log.info("signer %s listening on port %s", settings.identifier, port)
    if started is not None:
        started(port)
    if stop is None:
        stop = asyncio.Event()
        stop_on_signals(stop)  # and from the signal on, STOP_DEADLINE_SECONDS to end
    following = None if follower is None else asyncio.create_task(follower.run())
    try:
        await stop.wait()
    finally:
        if following is not None:
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await following
        await server.stop(grace=1.0)
        await close_checker(checker)
        if client is not None:
            await client.aclose()
        audit.log.close()
        log.info("signer %s stopped", settings.identifier)


async def close_checker(checker: EvidenceChecker) -> None:
    """Release what the checker holds, if it says how (`async close()`)."""
    close = getattr(checker, "close", None)
    if close is not None:
        await close()


def _add_ceremony(server: grpc.aio.Server, settings: SignerSettings, key_state: KeyState) -> None:
    """Ceremonies (DKG, refresh, reshare) are served beside signing, from the same key state."""
    if not settings.operator_ids:
        log.warning(
            "KEYMINT_OPERATOR_IDS is not set: this signer serves no key ceremony "
            "(every ceremony call is refused)"
        )
    if settings.allow_trusted_dealer:
        log.warning(
            "KEYMINT_DEV_ALLOW_TRUSTED_DEALER=true: this signer takes part in trusted-dealer "
            "installs, whose driver knows the whole group secret and can sign alone. "
            "DEVELOPMENT ONLY."
        )
    servicer = CeremonyServicer(
        identifier=settings.identifier,
        key_state=key_state,
        tls_files=settings.tls,
        operators=settings.operator_ids,
        ca_pem=settings.tls.ca.read_bytes(),
        approvals=ReplaceApprovals(settings.state_dir),
        allow_trusted_dealer=settings.allow_trusted_dealer,
        min_threshold=settings.min_threshold,
    )
    add_to_server(servicer, server)


def _operator_ids(env: Mapping[str, str], coordinator_id: str) -> frozenset[str]:
    """SPIFFE IDs that may drive ceremonies; the coordinator's never (the gateway holds it)."""
    ids = env.get("KEYMINT_OPERATOR_IDS", "").replace(",", " ").split()
    for operator in ids:
        if not operator.startswith("spiffe://") or len(operator) <= len("spiffe://"):
            raise SignerSettingsError("KEYMINT_OPERATOR_IDS", f"{operator!r} is not a SPIFFE ID")
        if operator.lower() == coordinator_id.lower():
            raise SignerSettingsError(
                "KEYMINT_OPERATOR_IDS",
                f"{operator} is the coordinator's identity (KEYMINT_COORDINATOR_ID); the gateway "
                "holds its credentials, so it must never drive key ceremonies: give operators an "
                "identity of their own",
            )
    return frozenset(ids)


def _min_threshold(env: Mapping[str, str]) -> int:
    """FROST_T, read as the gateway reads it: one setting for the whole deployment, so the
    signers refuse exactly what the coordinator would not adopt."""
    value = _int(env, "FROST_T", 2)
    if value < 2:
        raise SignerSettingsError("FROST_T", f"{value} is below 2, FROST's minimum threshold")
    return value


def _bool(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise SignerSettingsError(name, f"{raw!r} is not a boolean (true/false)")


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise SignerSettingsError(name, "is required")
    return value


def _path(env: Mapping[str, str], name: str) -> Path | None:
    value = env.get(name, "").strip()
    return Path(value) if value else None


def _int(env: Mapping[str, str], name: str, default: int | None) -> int:
    raw = env.get(name)
    if raw is None or not raw.strip():
        if default is None:
            raise SignerSettingsError(name, "is required")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SignerSettingsError(name, f"{raw!r} is not an integer") from None
    if value <= 0:
        raise SignerSettingsError(name, f"{value} must be positive")
    return value


def main_env() -> Mapping[str, str]:
    return dict(os.environ)


# Every setting of a signer process but the evidence checker's (the gateway's, for
# extauthz.guard_checker: its module's SETTINGS); `signer check-config` reads both.
SIGNER_SETTINGS: tuple[Setting, ...] = (
    Setting("KEYMINT_SIGNER_ID", Kind.INTEGER, "1"),
    Setting("KEYMINT_SIGNER_LISTEN", Kind.TEXT, "0.0.0.0:9443"),
    Setting("KEYMINT_SIGNER_STATE_DIR", Kind.TEXT, "/var/lib/keymint"),
    Setting("KEYMINT_SHARE_FILE", Kind.TEXT, "/var/lib/keymint/share.sealed"),
    Setting("KEYMINT_SIGNER_AUDIT_LOG", Kind.TEXT, "/var/lib/keymint/audit.jsonl"),
    Setting("KEYMINT_TLS_DIR", Kind.TEXT, "/etc/keymint/tls"),
    Setting("KEYMINT_ISSUER", Kind.TEXT, "https://keymint.example.com"),
    Setting("TOKEN_MAX_TTL_SECONDS", Kind.INTEGER, "3600"),
    Setting("KEYMINT_COORDINATOR_ID", Kind.TEXT, "spiffe://keymint.internal/keymint/coordinator"),
    Setting("KEYMINT_EVIDENCE_CHECKER", Kind.TEXT, "extauthz.guard_checker:from_env"),
    Setting("KEYMINT_OPERATOR_IDS", Kind.LIST, "spiffe://keymint.internal/keymint/operator"),
    Setting("KEYMINT_DEV_ALLOW_TRUSTED_DEALER", Kind.BOOLEAN, "false"),
    # Shared with the gateway (and declared there too): `_merged` in signer.config_check and
    # `schema_of` of the checker's settings keep one entry.
    Setting("FROST_T", Kind.INTEGER, "2"),
    Setting("KEYMINT_SIGNER_REVOCATIONS_FILE", Kind.TEXT, "/etc/keymint/revocations.json"),
    Setting("KEYMINT_EVIDENCE_BUDGET", Kind.INTEGER, "32"),
    Setting("KEYMINT_EVIDENCE_BUDGET_WINDOW_SECONDS", Kind.INTEGER, "900"),
    *VAULT_SETTINGS,
    *REDIS_SETTINGS,
    *OBSERVABILITY_SETTINGS,
    config_file_setting(),
)
SIGNER_SCHEMA = schema_of(SIGNER_SETTINGS)
