"""`extauthz serve --workers N`: N gateway processes on the same ports, one per core.

Python runs one thread of Python at a time, so one gateway process uses one core. This supervisor
starts N workers (`extauthz serve --worker-index I`), each a whole gateway with its own event loop,
coordinator and caches, all listening on the same Check and HTTP ports with SO_REUSEPORT: the
kernel spreads new connections over them. Ports given as 0 are chosen here first (a socket bound
with SO_REUSEPORT, never listening, held for the supervisor's life) so every worker binds the same
one. What workers share goes through the state store: Redis when KEYMINT_REDIS_URL is set, else
the state directory (revocations and the key ring in files, rate-limit buckets in SQLite); each
worker writes an audit log of its own (`<log>.worker-I.jsonl`), since each is a hash chain.

A worker that exits is started again (after a second); SIGTERM or SIGINT stops them all. The
supervisor prints the ready line once every worker has printed its own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from extauthz.config import CheckPortUnix, GatewaySettings
from extauthz.errors import ExtAuthzError
from signer.settings import host_port
from signer.stopping import STOP_DEADLINE_SECONDS

log = logging.getLogger(__name__)

READY_PREFIX = b"keymint-gateway ready"
START_TIMEOUT_SECONDS = 120.0
RESTART_DELAY_SECONDS = 1.0


class WorkerError(ExtAuthzError):
    """A worker could not be started."""


def worker_audit_log(path: Path, index: int) -> Path:
    """Each worker's own hash-chained audit log, beside the configured one."""
    return path.with_name(f"{path.stem}.worker-{index}{path.suffix}")


def reserve(listen: str) -> tuple[socket.socket, str]:
    """A socket bound to `listen` with SO_REUSEPORT (not listening, so it takes no connection),
    and the address with the port it got."""
    bare, port = host_port(listen, any_port=True)  # both listen settings were checked at start
    host = f"[{bare}]" if ":" in bare else bare
    family = socket.AF_INET6 if ":" in bare else socket.AF_INET
    reservation = socket.socket(family, socket.SOCK_STREAM)
    reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        reservation.bind((bare, port))
    except OSError as exc:
        reservation.close()
        raise WorkerError(f"cannot bind {listen}: {exc.strerror}") from None
    return reservation, f"{host}:{reservation.getsockname()[1]}"


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0


class Supervisor:
    def __init__(
        self,
        settings: GatewaySettings,
        *,
        verbose: bool = False,
        announce: Callable[[int, int], None],
    ) -> None:
        if isinstance(settings.check_port, CheckPortUnix):
            raise WorkerError("workers need a TCP Check port")
        self._settings = settings
        self._verbose = verbose
        self._announce = announce
        self._stopping = False
        self._reservations: list[socket.socket] = []
        self._workers = [_Worker(i) for i in range(1, settings.workers + 1)]
        self._env: dict[str, str] = {}

    def run(self) -> int:
        previous = {
            signum: signal.signal(signum, self._stop) for signum in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            grpc_reservation, grpc_listen = reserve(self._settings.grpc_listen)
            self._reservations.append(grpc_reservation)
            http_reservation, http_listen = reserve(self._settings.http_listen)
            self._reservations.append(http_reservation)
            self._env = {
                **os.environ,
                "KEYMINT_GRPC_LISTEN": grpc_listen,
                "KEYMINT_HTTP_LISTEN": http_listen,
                "KEYMINT_WORKERS": str(self._settings.workers),
            }
            for worker in self._workers:
                self._start(worker)
            self._announce(int(grpc_listen.rpartition(":")[2]), int(http_listen.rpartition(":")[2]))
            log.info("%d workers serving", len(self._workers))
            self._watch()
        finally:
            self._stop_all()
            for reservation in self._reservations:
                reservation.close()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return 0

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True

    def _start(self, worker: _Worker) -> None:
        command = [sys.executable, "-m", "extauthz.cli"]
        if self._verbose:
            command.append("--verbose")
        command += ["serve", "--worker-index", str(worker.index)]
        process = subprocess.Popen(command, env=self._env, stdout=subprocess.PIPE)  # noqa: S603
        worker.process, worker.started = process, time.monotonic()
        assert process.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline and not self._stopping:
            ready, _, _ = select.select([process.stdout], [], [], 0.2)
            if not ready:
                if process.poll() is not None:
                    raise WorkerError(f"worker {worker.index} exited ({process.returncode})")
                continue
            line = process.stdout.readline()
            if not line:
                raise WorkerError(f"worker {worker.index} exited ({process.wait()})")
            if line.startswith(READY_PREFIX):
                return
        raise WorkerError(f"worker {worker.index} did not start within {START_TIMEOUT_SECONDS}s")

    def _watch(self) -> None:
        while not self._stopping:
            time.sleep(0.2)
            for worker in self._workers:
                process = worker.process
                if self._stopping or process is None or process.poll() is None:
                    continue
                log.error(
                    "worker %d exited (%s); starting it again", worker.index, process.returncode
                )
                time.sleep(RESTART_DELAY_SECONDS)
                with contextlib.suppress(WorkerError):
                    self._start(worker)

    def _stop_all(self) -> None:
        running = [w.process for w in self._workers if w.process is not None]
        for process in running:
            if process.poll() is None:
                process.terminate()
        # Past a worker's own bound it has said where it was stuck and exited: killed only after.
        deadline = time.monotonic() + STOP_DEADLINE_SECONDS + 2
        for process in running:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()
