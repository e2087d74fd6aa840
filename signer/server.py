"""The signer process: settings from the environment, the share unsealed, the services served.

The guard's evidence checker is composed in by name (`--evidence-checker module:factory`), so the
gateway's identity and policy code runs here without `signer` importing it.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from signer.audit import AsyncAuditLog, AuditLog
from signer.ceremony import CeremonyServicer, add_to_server
from signer.devca import TlsFiles, signer_name, spiffe_id, tls_files
from signer.endorsement import ENDORSEMENT_TYP, Endorsement
from signer.endorsement_guard import check_endorsement
from signer.errors import SignerError
from signer.guard import AcceptedToken, EvidenceChecker, Guard, GuardEvidence, GuardLimits
from signer.keyfiles import KeyFileError, KeyFiles
from signer.keystate import KeyState, message_header
from signer.proto import signer_pb2_grpc
from signer.service import SignerService
from signer.tls import server_credentials
from signer.vault.base import ShareVault
from signer.vault.config import open_vault, parse_vault_config

log = logging.getLogger(__name__)

EvidenceCheckerFactory = Callable[[Mapping[str, str]], EvidenceChecker]


class SignerSettingsError(SignerError):
    def __init__(self, setting: str, problem: str) -> None:
        self.setting = setting
        super().__init__(f"{setting}: {problem}")


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
        identifier = _int(env, "KEYMINT_SIGNER_ID", None)
        state = Path(env.get("KEYMINT_SIGNER_STATE_DIR", f"./state/signer-{identifier}"))
        tls_dir = Path(_required(env, "KEYMINT_TLS_DIR"))
        return cls(
            identifier=identifier,
            listen=env.get("KEYMINT_SIGNER_LISTEN", "127.0.0.1:0"),
            tls=tls_files(tls_dir, signer_name(identifier)),
            share_file=Path(env.get("KEYMINT_SHARE_FILE", str(state / "share.sealed"))),
            audit_log=Path(env.get("KEYMINT_SIGNER_AUDIT_LOG", str(state / "audit.jsonl"))),
            issuer=_required(env, "KEYMINT_ISSUER"),
            max_ttl_seconds=_int(env, "TOKEN_MAX_TTL_SECONDS", 3600),
            coordinator_id=env.get("KEYMINT_COORDINATOR_ID", spiffe_id("coordinator")),
            evidence_checker=_required(env, "KEYMINT_EVIDENCE_CHECKER"),
        )


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
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = key_state
        self._checker = checker
        self._issuer = issuer
        self._max_ttl = max_ttl
        self._clock = clock
        self._guards: dict[str, Guard] = {}

    async def check(
        self, message: bytes, evidence: GuardEvidence | None
    ) -> AcceptedToken | Endorsement:
        if message_header(message).get("typ") == ENDORSEMENT_TYP:
            return check_endorsement(
                message, keys=self._keys, issuer=self._issuer, now=self._clock()
            )
        key = self._keys.for_message(message) or self._keys.current
        guard = self._guards.get(key.kid)
        if guard is None:
            limits = GuardLimits.for_group_key(
                key.package.group_public_key, issuer=self._issuer, max_ttl_seconds=self._max_ttl
            )
            guard = Guard(limits=limits, evidence_checker=self._checker, clock=self._clock)
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
    return factory(env)


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
    guard = KeyedGuard(
        key_state=key_state,
        checker=checker,
        issuer=settings.issuer,
        max_ttl=settings.max_ttl_seconds,
    )
    settings.audit_log.parent.mkdir(parents=True, exist_ok=True)
    audit = AsyncAuditLog(AuditLog(settings.audit_log))
    service = SignerService(
        key_state=key_state,
        guard=guard,
        audit=audit,
        allowed_callers=[settings.coordinator_id],
    )
    server = grpc.aio.server()
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
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(grace=1.0)


def _add_ceremony(server: grpc.aio.Server, settings: SignerSettings, key_state: KeyState) -> None:
    """Ceremonies (DKG, refresh, reshare) are served beside signing, from the same key state."""
    servicer = CeremonyServicer(
        identifier=settings.identifier,
        key_state=key_state,
        tls_files=settings.tls,
        trusted_driver=settings.coordinator_id,
        ca_pem=settings.tls.ca.read_bytes(),
    )
    add_to_server(servicer, server)


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise SignerSettingsError(name, "is required")
    return value


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
