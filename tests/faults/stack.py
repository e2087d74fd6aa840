"""The stack the fault and soak runs break: extauthz.dev.replicas' stack with two replicas, rate
limits out of the way (the traffic is steady by design), quick state syncs and a short signing
deadline, each process's audit log in a directory of its own, which `mount_audit` turns into a
small tmpfs (root only) before anything starts, so a run can fill it.

    callers --TLS/mTLS--> front Envoy (envoy/envoy.yaml; keymint_grpc and keymint_http balance
                          the two replicas round robin, health-checked every second)
                              --Check, mTLS--> gateway 1 | gateway 2  (python -m extauthz.cli serve)
                                                     \\         /
                               redis-server (ACL users, AOF) + signers 1, 2, 3 (2-of-3; their
                               guards run the gateway's own identity and policy code)

Every process keeps its ports across restarts; what the faults add here: a signer restarted as
another module or with its clock moved (libfaketime), and `stop_cleanly`, which stops each process
as an operator would and reports how it went.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from extauthz.dev.replicas import ReplicaSettings, ReplicasStack, audit_directory, replicas_stack
from tests.faults.disk import SmallDisk

REPLICAS = 2
SYNC_SECONDS = 0.25
MAX_STALENESS_SECONDS = 2.0
SIGN_TIMEOUT_SECONDS = 2.0  # KEYMINT_SIGN_TIMEOUT_SECONDS: the deadline of a new mint
GATEWAY_ENV = {
    "KEYMINT_RATE_PER_SECOND": "100000",
    "KEYMINT_RATE_BURST": "100000",
    "KEYMINT_STATE_SYNC_SECONDS": str(SYNC_SECONDS),
    "KEYMINT_STATE_MAX_STALENESS_SECONDS": str(MAX_STALENESS_SECONDS),
    "KEYMINT_SIGN_TIMEOUT_SECONDS": str(SIGN_TIMEOUT_SECONDS),
    # A process that will not stop is sent SIGABRT: its log then holds every thread's stack.
    "PYTHONFAULTHANDLER": "1",
}
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
class FaultStack(ReplicasStack):
    disks: dict[str, SmallDisk] = field(default_factory=dict)  # "gateway-1", "signer-3", ...

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
        self.gateway(replica).start()
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
        process.send_signal(signal.SIGABRT)  # faulthandler writes the stacks to the log
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        return Stopped(name, None, (f"did not stop within 15 s of SIGTERM: aborted, see {log}",))
    tail = log.read_bytes()[offset:].decode(errors="replace") if log.exists() else ""
    problems = tuple(line for line in tail.splitlines() if UNCLEAN.search(line))
    return Stopped(name, returncode, problems)


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
    tmpfs of its own (root only), mounted before any process starts and unmounted after they all
    stopped. A SIGTERM to the runner stops them too (as Ctrl-C does)."""
    with contextlib.ExitStack() as stack:
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
            stack.callback(signal.signal, signal.SIGTERM, previous)
        disks: dict[str, SmallDisk] = {}
        for name in mount_audit:
            disk = SmallDisk(audit_directory(directory, name))
            disk.mount()
            disks[name] = disk
            stack.callback(_keep_and_unmount, disk, directory / f"audit-{name}.copy")
        settings = ReplicaSettings(
            replicas=REPLICAS,
            gateway_env={**GATEWAY_ENV, **(gateway_env or {})},
            signer_env={"PYTHONFAULTHANDLER": "1", **(signer_env or {})},
        )
        running = stack.enter_context(replicas_stack(directory, settings=settings, kind=FaultStack))
        running.disks.update(disks)
        yield running


def _keep_and_unmount(disk: SmallDisk, copy: Path) -> None:
    """Copy what the tmpfs holds next to it (for reading after the run), then unmount it."""
    with contextlib.suppress(OSError):
        disk.free()
        shutil.copytree(disk.path, copy, dirs_exist_ok=True)
    disk.unmount()
