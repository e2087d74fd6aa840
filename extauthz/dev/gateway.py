"""The gateway process of the local stack, `python -m extauthz.cli serve` as an operator runs it,
and `extauthz pin-keys` against it."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from extauthz.dev.processes import kill_process, stop_process
from extauthz.server.workers import READY_PREFIX


@dataclass
class GatewayProcess:
    """`python -m extauthz.cli serve`, configured by its environment and `args` (`serve`'s own
    options, such as `--workers 2`); ports read from its line."""

    env: Mapping[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    grpc_port: int = 0
    http_port: int = 0
    args: tuple[str, ...] = ()

    def start(self, timeout: float = 60.0, *, wait_ready: bool = True) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "extauthz.cli", "serve", *self.args],
                env=dict(self.env),
                stdout=subprocess.PIPE,
                stderr=log,
            )
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.process.stdout], [], [], 0.2)
            if not ready:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"gateway exited ({self.process.returncode}): see {self.log}"
                    )
                continue
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"gateway exited: see {self.log}")
            if line.startswith(READY_PREFIX):
                fields = dict(part.split(b"=") for part in line.split()[2:])
                self.grpc_port = int(fields[b"grpc_port"])
                self.http_port = int(fields[b"http_port"])
                if wait_ready:
                    self.wait_ready(deadline - time.monotonic())
                return
        raise RuntimeError(f"gateway did not start within {timeout}s: see {self.log}")

    def readiness(self) -> tuple[int, dict[str, Any]]:
        """GET /readyz: its status and document (0 and {} when the edge does not answer)."""
        url = f"http://127.0.0.1:{self.http_port}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                return int(answer.status), json.loads(answer.read())
        except urllib.error.HTTPError as refused:
            return int(refused.code), json.loads(refused.read())
        except OSError:
            return 0, {}

    def wait_ready(self, timeout: float = 30.0, *, in_a_row: int = 1) -> None:
        """The gateway listens before it is ready (extauthz.server.startup): wait for /readyz's 200,
        `in_a_row` times on as many connections. With `--workers N` each connection reaches a
        worker the kernel picks, and each worker becomes ready on its own: 16 in a row all land
        on one worker once in 2**15 tries."""
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            status, document = self.readiness()
            seen = seen + 1 if status == 200 else 0
            if seen >= in_a_row:
                return
            if status == 200:
                continue
            if not self.alive():
                raise RuntimeError(f"gateway exited: see {self.log}")
            time.sleep(0.05)
        raise RuntimeError(f"gateway not ready within {timeout:.0f}s: {document}; see {self.log}")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """A crash, not a shutdown: SIGKILL."""
        kill_process(self.process)

    def stop(self) -> None:
        stop_process(self.process)


def pin_keys(env: Mapping[str, str], http_port: int, out: Path) -> str:
    """`extauthz pin-keys` as an operator runs it; its output line."""
    url = f"http://127.0.0.1:{http_port}/.well-known/keymint-endorsements.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "extauthz.cli",
            "pin-keys",
            "--trust-root",
            env["KEYMINT_TRUST_ROOT"],
            "--endorsements",
            url,
            "--allow-http",
            "--out",
            str(out),
        ],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"pin-keys exited {done.returncode}: {done.stderr}")
    return done.stdout
