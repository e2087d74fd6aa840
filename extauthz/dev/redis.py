"""redis-server on loopback for the multi-replica local stack (extauthz.dev.replicas), for
development and benchmarks: the ACL users of docs/operations.md ("Redis users"), the default user
off, an append-only file, and the files the gateways and the signers read their credentials from
(KEYMINT_REDIS_CREDENTIALS_FILE, `USERNAME:PASSWORD`).

Nothing here is for production: the passwords are made up on this machine and the administrator's
is known to everyone.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import redis

from extauthz.dev.processes import kill_process, stop_process

# docs/operations.md, "Redis users": what each party may do, and nothing else.
GATEWAY_ACL = (
    "on ~keymint:* &keymint:* -@all +@read +@write +@scripting +@pubsub +@transaction "
    "+@connection +time -@dangerous"
)
SIGNER_ACL = (
    "on resetkeys ~keymint:revoked:* resetchannels &keymint:events -@all "
    "+get +zrangebyscore +subscribe +unsubscribe +ping +client"
)
ACLS = {"gateway": GATEWAY_ACL, "signer": SIGNER_ACL}
# A user that may do anything, for the stack's own inspection (never handed to keymint).
ADMIN_USER = "admin"
ADMIN_PASSWORD = "admin"  # noqa: S105 (development only, and not a secret)


def free_port() -> int:
    """A TCP port on loopback that was free a moment ago (for a process that must keep its port
    across restarts, so the port is chosen once, before it first starts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_credentials(path: Path, user: str, password: str) -> Path:
    """The file KEYMINT_REDIS_CREDENTIALS_FILE names: `USERNAME:PASSWORD`, readable by its owner
    only; its path."""
    path.write_text(f"{user}:{password}")
    path.chmod(0o600)
    return path


def _hashed(password: str) -> str:
    return "#" + hashlib.sha256(password.encode()).hexdigest()


@dataclass
class RedisProcess:
    """redis-server on loopback with ACL users and an append-only file in `directory`.

    `users` maps each of ACLS' names ("gateway", "signer") to its password; a user with another
    name is refused here, as it would have no rule. The port is chosen once, so a restarted
    server comes back where its clients expect it, with what its append-only file kept."""

    directory: Path
    users: Mapping[str, str]  # name -> password
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        unknown = set(self.users) - set(ACLS)
        if unknown:
            raise ValueError(f"no ACL for Redis users {sorted(unknown)}: only {sorted(ACLS)}")

    @property
    def url(self) -> str:
        """KEYMINT_REDIS_URL (no credentials: those are in the credentials files)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def write_acl(self) -> Path:
        """users.acl: the default user off, each user with its rule, and the administrator."""
        acl = self.directory / "users.acl"
        lines = ["user default off"]
        lines += [
            f"user {name} {ACLS[name]} {_hashed(password)}" for name, password in self.users.items()
        ]
        lines.append(f"user {ADMIN_USER} on ~* &* +@all {_hashed(ADMIN_PASSWORD)}")
        acl.write_text("\n".join(lines) + "\n")
        return acl

    def start(self, timeout: float = 10.0) -> None:
        """Start redis-server and wait until it answers PING (as the administrator)."""
        server = shutil.which("redis-server")
        if server is None:
            raise RuntimeError("redis-server is required (make setup installs it)")
        acl = self.write_acl()
        with (self.directory / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(
                [
                    server,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    str(self.directory),
                    "--aclfile",
                    str(acl),
                    "--save",
                    "",
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                ],
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.admin().ping()
                return
            except redis.ConnectionError:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"redis-server exited: see {self.directory / 'redis.log'}"
                    ) from None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def admin(self) -> redis.Redis:
        """A client as the administrator."""
        return redis.Redis(
            host="127.0.0.1", port=self.port, username=ADMIN_USER, password=ADMIN_PASSWORD
        )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """A crash, not a shutdown: SIGKILL."""
        kill_process(self.process)

    def stop(self) -> None:
        stop_process(self.process)
