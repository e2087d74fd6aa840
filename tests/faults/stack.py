"""The stack the fault and soak runs break: everything a user would run, each a real process.

    callers --TLS/mTLS--> front Envoy (envoy/envoy.yaml; keymint_grpc and keymint_http balance
                          the two replicas round robin, health-checked every second)
                              --Check, mTLS--> gateway 1 | gateway 2  (python -m extauthz.cli serve)
                                                     \\         /
                               redis-server (ACL users, AOF) + signers 1, 2, 3 (2-of-3; their
                               guards run the gateway's own identity and policy code)

It is tests/replicas/stack.py's stack with two replicas, rate limits out of the way (the traffic is
steady by design) and each audit log in a directory of its own, which `mount_audit` turns into a
small tmpfs (root only) so a run can fill it. Every process keeps its ports across restarts, and
`stop_cleanly` stops each one as an operator would and reports how it went.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from extauthz.dev.envoy import (
    EnvoyProcess,
    check_port_values,
    render,
    server_certificate,
    write_tls,
)
from extauthz.dev.gateway import GatewayProcess
from extauthz.dev.github import LocalOidcIssuer
from extauthz.dev.servers import BackgroundLoop, EchoUpstream
from extauthz.dev.settings import (
    OIDC_AUDIENCE,
    TRUST_DOMAIN,
    root_ca,
    stack_env,
    valid_now,
    write_trust_root,
)
from extauthz.dev.signers import SignerProcess
from tests.conftest import REPO
from tests.faults.disk import SmallDisk
from tests.helpers.certs import CertificateAuthority, IssuedCertificate, pem
from tests.replicas.stack import (
    ADMIN_TOKEN,
    FRONT_HOSTNAME,
    RedisProcess,
    _balance_over_replicas,
    _write_secret,
    free_port,
)
from tests.signer.harness import SignerCluster

REPLICAS = 2
SYNC_SECONDS = 0.25
MAX_STALENESS_SECONDS = 2.0
SIGN_TIMEOUT_SECONDS = 2.0  # KEYMINT_SIGN_TIMEOUT_SECONDS: the deadline of a new mint
FAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")  # Debian's libfaketime
# What a clean stop must not leave in a log (after the stop began).
UNCLEAN = re.compile(
    r"Traceback|Unclosed|Task was destroyed|Exception ignored|never awaited| ERROR | CRITICAL "
    r"|\[critical\]|\[error\]"
)


@dataclass(frozen=True)
class Stopped:
    """How one process stopped: its exit status and any line its log gained that is an error."""

    name: str
    returncode: int | None
    problems: tuple[str, ...]

    @property
    def clean(self) -> bool:
        return self.returncode == 0 and not self.problems


@dataclass
class FaultStack:
    directory: Path
    background: BackgroundLoop
    issuer: LocalOidcIssuer
    ca: CertificateAuthority
    cluster: SignerCluster
    redis: RedisProcess
    gateways: list[GatewayProcess]
    front: EnvoyProcess
    edge_ca: Path
    env: Mapping[str, str]
    disks: dict[str, SmallDisk] = field(default_factory=dict)  # "gateway-1", "signer-3", ...

    def svid(self, path: str) -> IssuedCertificate:
        return self.ca.issue_svid(f"spiffe://{TRUST_DOMAIN}{path}", **valid_now())

    @property
    def front_url(self) -> str:
        return f"https://127.0.0.1:{self.front.port('front_tls')}"

    # --- where things are ---------------------------------------------------------------------

    def gateway_audit(self, replica: int) -> Path:
        """Replica `replica`'s audit log (1-based)."""
        return Path(self.gateways[replica - 1].env["KEYMINT_AUDIT_LOG"])

    def signer_audit(self, identifier: int) -> Path:
        return Path(self.cluster.signers[identifier].env["KEYMINT_SIGNER_AUDIT_LOG"])

    def audit_logs(self) -> dict[str, Path]:
        logs = {f"gateway-{i}": self.gateway_audit(i) for i in range(1, len(self.gateways) + 1)}
        logs.update({f"signer-{i}": self.signer_audit(i) for i in sorted(self.cluster.signers)})
        return logs

    def pids(self) -> dict[str, int]:
        """Every process of the stack that is running, by name."""
        found: dict[str, int] = {}
        for i, gateway in enumerate(self.gateways, start=1):
            if gateway.process is not None and gateway.process.poll() is None:
                found[f"gateway-{i}"] = gateway.process.pid
        for i, signer in sorted(self.cluster.signers.items()):
            if signer.process is not None and signer.process.poll() is None:
                found[f"signer-{i}"] = signer.process.pid
        if self.redis.process is not None and self.redis.process.poll() is None:
            found["redis"] = self.redis.process.pid
        if self.front.process is not None and self.front.process.poll() is None:
            found["envoy"] = self.front.process.pid
        return found

    # --- faults -------------------------------------------------------------------------------

    def restart_signer(
        self,
        identifier: int,
        *,
        module: str = "signer.cli",
        clock_offset_seconds: int = 0,
    ) -> float:
        """Stop signer `identifier` (if running) and start it again as `module`, its clock
        `clock_offset_seconds` ahead (libfaketime); the wall time at which it was ready."""
        signer = self.cluster.signers[identifier]
        signer.stop()
        signer.module = module
        for name in ("LD_PRELOAD", "FAKETIME", "FAKETIME_DONT_FAKE_MONOTONIC"):
            signer.env.pop(name, None)
        if clock_offset_seconds:
            if not FAKETIME.exists():
                raise RuntimeError(f"{FAKETIME} is missing: apt-get install libfaketime")
            signer.env.update(
                LD_PRELOAD=str(FAKETIME),
                FAKETIME=f"{clock_offset_seconds:+d}s",
                FAKETIME_DONT_FAKE_MONOTONIC="1",
            )
        signer.start()
        return time.time()

    def start_signer(self, identifier: int) -> float:
        self.cluster.signers[identifier].start()
        return time.time()

    def start_gateway(self, replica: int) -> float:
        self.gateways[replica - 1].start()
        return time.time()

    def redis_start(self) -> float:
        self.redis.start()
        return time.time()

    # --- the end --------------------------------------------------------------------------------

    def stop_cleanly(self) -> list[Stopped]:
        """SIGTERM every process, callers' side first (Envoy, gateways, signers, Redis), each
        waited for; its exit status and the error lines its log gained meanwhile."""
        stopped = [
            _stop(
                "envoy",
                self.front.process,
                self.directory / "front-envoy.log",
            )
        ]
        for i, gateway in enumerate(self.gateways, start=1):
            stopped.append(_stop(f"gateway-{i}", gateway.process, gateway.log))
            if gateway.process is not None and gateway.process.stdout is not None:
                gateway.process.stdout.close()
        for i, signer in sorted(self.cluster.signers.items()):
            stopped.append(_stop(f"signer-{i}", signer.process, signer.log))
            if signer.process is not None and signer.process.stdout is not None:
                signer.process.stdout.close()
        stopped.append(_stop("redis", self.redis.process, self.redis.directory / "redis.log"))
        return stopped


def _stop(name: str, process: subprocess.Popen[bytes] | None, log: Path) -> Stopped:
    if process is None or process.poll() is not None:
        return Stopped(name, None if process is None else process.returncode, ("not running",))
    offset = log.stat().st_size if log.exists() else 0
    process.send_signal(signal.SIGCONT)  # in case a fault left it stopped
    process.terminate()
    try:
        returncode = process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return Stopped(name, None, ("did not stop within 15 s of SIGTERM: killed",))
    tail = log.read_bytes()[offset:].decode(errors="replace") if log.exists() else ""
    problems = tuple(line for line in tail.splitlines() if UNCLEAN.search(line))
    return Stopped(name, returncode, problems)


def _signer_audit_dir(directory: Path, identifier: int) -> Path:
    return directory / f"audit-signer-{identifier}"


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def fault_stack(
    directory: Path,
    *,
    mount_audit: tuple[str, ...] = (),
    gateway_env: Mapping[str, str] | None = None,
    signer_env: Mapping[str, str] | None = None,
) -> Iterator[FaultStack]:
    """Start everything; stop whatever is still running at the end, whatever happened.

    `mount_audit` names the processes ("gateway-1", "signer-3", ...) whose audit directory is a
    tmpfs of its own (root only). A SIGTERM to the runner stops them too (as Ctrl-C does)."""
    with contextlib.ExitStack() as stack:
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
            stack.callback(signal.signal, signal.SIGTERM, previous)
        background = BackgroundLoop()
        stack.callback(background.close)
        issuer = LocalOidcIssuer(clock=time.time, audience=OIDC_AUDIENCE)
        background.run(issuer.start())
        stack.callback(lambda: background.run(issuer.stop()))
        echo = EchoUpstream()
        background.run(echo.start())
        stack.callback(lambda: background.run(echo.stop()))

        disks: dict[str, SmallDisk] = {}
        for name in mount_audit:
            disk = SmallDisk(directory / f"audit-{name}")
            disk.mount()
            disks[name] = disk
            stack.callback(_keep_and_unmount, disk, directory / f"audit-{name}.copy")

        redis_dir = directory / "redis"
        redis_dir.mkdir()
        passwords = {"gateway": "gateway-password-1", "signer": "signer-password-1"}
        redis_server = RedisProcess(redis_dir, passwords)
        stack.callback(redis_server.stop)
        redis_server.start()
        url = f"redis://127.0.0.1:{redis_server.port}/0"

        ca = root_ca(TRUST_DOMAIN)
        (directory / "trust-bundle.pem").write_bytes(pem(ca.certificate))
        cluster = SignerCluster(directory, 2, 3)
        assert cluster.package is not None
        env = {
            **stack_env(directory, issuer.issuer),
            "KEYMINT_TRUST_ROOT": str(
                write_trust_root(directory, cluster.package.group_public_key)
            ),
            "KEYMINT_REDIS_URL": url,
        }
        signer_credentials = _write_secret(
            directory / "redis-signer.credentials", f"signer:{passwords['signer']}"
        )
        for identifier, signer in cluster.signers.items():
            audit_dir = _signer_audit_dir(directory, identifier)
            audit_dir.mkdir(exist_ok=True)
            signer.env.update(env)
            signer.env["KEYMINT_REDIS_CREDENTIALS_FILE"] = str(signer_credentials)
            signer.env["KEYMINT_SIGNER_AUDIT_LOG"] = str(audit_dir / "audit.jsonl")
            signer.env.update(signer_env or {})
        stack.callback(_stop_signers, cluster.signers)
        cluster.start()

        gateway_credentials = _write_secret(
            directory / "redis-gateway.credentials", f"gateway:{passwords['gateway']}"
        )
        signers = ",".join(f"{i}={p.address}" for i, p in sorted(cluster.signers.items()))
        gateways = []
        for index in range(1, REPLICAS + 1):
            state = directory / f"gateway-{index}"
            audit_dir = directory / f"audit-gateway-{index}"
            audit_dir.mkdir(exist_ok=True)
            process_env = {
                **os.environ,
                **env,
                "PYTHONPATH": str(REPO),
                "KEYMINT_SIGNERS": signers,
                "KEYMINT_REDIS_CREDENTIALS_FILE": str(gateway_credentials),
                "KEYMINT_GRPC_LISTEN": f"127.0.0.1:{free_port()}",
                "KEYMINT_HTTP_LISTEN": f"127.0.0.1:{free_port()}",
                "KEYMINT_STATE_DIR": str(state),
                "KEYMINT_AUDIT_LOG": str(audit_dir / "audit.jsonl"),
                "KEYMINT_ADMIN_TOKEN_SHA256": hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest(),
                "KEYMINT_RATE_PER_SECOND": "100000",
                "KEYMINT_RATE_BURST": "100000",
                "KEYMINT_STATE_SYNC_SECONDS": str(SYNC_SECONDS),
                "KEYMINT_STATE_MAX_STALENESS_SECONDS": str(MAX_STALENESS_SECONDS),
                "KEYMINT_SIGN_TIMEOUT_SECONDS": str(SIGN_TIMEOUT_SECONDS),
                **(gateway_env or {}),
            }
            gateway = GatewayProcess(env=process_env, log=directory / f"gateway-{index}.log")
            stack.callback(gateway.stop)
            gateway.start()
            gateways.append(gateway)

        edge = root_ca("edge.test")
        edge_ca = directory / "edge-ca.pem"
        edge_ca.write_bytes(pem(edge.certificate))
        server_cert, server_key = write_tls(
            directory, "front-server", server_certificate(edge, FRONT_HOSTNAME)
        )
        config = render(
            "envoy.yaml",
            directory,
            ADMIN_PORT=0,
            LISTEN_ADDRESS="127.0.0.1",
            LISTEN_PORT=0,
            SERVER_CERT=server_cert,
            SERVER_KEY=server_key,
            CLIENT_CA_BUNDLE=directory / "trust-bundle.pem",
            GATEWAY_GRPC_PORT=gateways[0].grpc_port,
            **check_port_values(directory),
            GATEWAY_HTTP_PORT=gateways[0].http_port,
            UPSTREAM_PORT=echo.port,
        )
        _balance_over_replicas(config, gateways)
        front = EnvoyProcess(config, directory, "front-envoy")
        stack.callback(front.stop)
        front.start()

        yield FaultStack(
            directory=directory,
            background=background,
            issuer=issuer,
            ca=ca,
            cluster=cluster,
            redis=redis_server,
            gateways=gateways,
            front=front,
            edge_ca=edge_ca,
            env={**env, "KEYMINT_REDIS_CREDENTIALS_FILE": str(gateway_credentials)},
            disks=disks,
        )


def _stop_signers(signers: Mapping[int, SignerProcess]) -> None:
    for signer in signers.values():
        signer.stop()


def _keep_and_unmount(disk: SmallDisk, copy: Path) -> None:
    """Copy what the tmpfs holds next to it (for reading after the run), then unmount it."""
    with contextlib.suppress(OSError):
        disk.free()
        shutil.copytree(disk.path, copy, dirs_exist_ok=True)
    disk.unmount()
