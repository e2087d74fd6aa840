"""The multi-replica local stack: N gateway replicas sharing one Redis, for development, the
benchmarks (bench-e2e) and the replica and fault tests. Every part is a real process on loopback.

    caller --TLS/mTLS--> front Envoy (envoy/envoy.yaml; keymint_grpc and keymint_http balance the
                         replicas round robin, health-checked every second)
                             --Check, mTLS--> gateway 1 | gateway 2 | ... (`extauthz serve`)
                                                    \\         |          /
                          redis-server (ACL users, AOF) + signers 1, 2, 3 (2-of-3; their guards
                          run the gateway's own identity and policy code)

The replicas and the signers reach Redis as docs/operations.md says: the gateways as an ACL user
that may use keymint's keys only, the signers as a read-only user that may read revocations and
listen for them; their passwords come from files (extauthz.dev.redis). The echo upstream and the
GitHub-shaped OIDC issuer run in this process, on a background event loop, as in
extauthz.dev.stack.

Every process keeps its ports across restarts (the replicas' are chosen before they first start),
so a restarted one comes back where Envoy and the others expect it. The directory's layout:
`gateway-N/` (a replica's state), `gateway-N.log`, `signer-N/` (a signer's state and log),
`audit-<process>/audit.jsonl` (each process's audit log, in a directory of its own, so that a
caller may mount a file system of its choosing there before the stack starts: see
`audit_directory`), `redis/`, `front-envoy.*`.

What makes it a development stack: extauthz.dev.stack's (a development CA, a trusted dealer's key
shares sealed with a passphrase, plain HTTP to the issuer), and Redis passwords made up here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, overload

import yaml
from envoy.service.auth.v3 import external_auth_pb2_grpc
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse

from extauthz.dev.calls import envoy_channel
from extauthz.dev.certs import CertificateAuthority, IssuedCertificate, pem
from extauthz.dev.envoy import EnvoyProcess, FrontCalls, front_envoy
from extauthz.dev.gateway import GatewayProcess
from extauthz.dev.github import LocalOidcIssuer
from extauthz.dev.redis import RedisProcess, free_port, write_credentials
from extauthz.dev.servers import BackgroundLoop, EchoUpstream
from extauthz.dev.settings import (
    OIDC_AUDIENCE,
    TRUST_DOMAIN,
    root_ca,
    stack_env,
    valid_now,
    write_trust_root,
)
from extauthz.dev.signers import SignerCluster

# The replicas' admin API token (KEYMINT_ADMIN_TOKEN_SHA256 is its hash): development only.
ADMIN_TOKEN = "replicas-admin-token"  # noqa: S105
# Made up for the stack's Redis users (extauthz.dev.redis.ACLS): development only.
REDIS_PASSWORDS = {"gateway": "gateway-password-1", "signer": "signer-password-1"}
BALANCED_CLUSTERS = {"keymint_grpc": "grpc_port", "keymint_http": "http_port"}


def audit_directory(directory: Path, process: str) -> Path:
    """Where `process` ("gateway-1", "signer-3", ...) keeps its audit log (audit.jsonl) in a
    stack made in `directory`. It need not exist before the stack starts; if it does (say, a
    tmpfs mounted there), it is used as it is."""
    return directory / f"audit-{process}"


@dataclass(frozen=True)
class ReplicaSettings:
    """What differs between uses of the stack.

    `gateway_env` and `signer_env` are added last to every replica's and every signer's
    environment (rate limits, sync intervals, deadlines). `prepare` is called with the signers
    made but not started (their state directories exist), before any process of the stack starts:
    to seal another key into them, say."""

    replicas: int = 2
    gateway_env: Mapping[str, str] = field(default_factory=dict)
    signer_env: Mapping[str, str] = field(default_factory=dict)
    prepare: Callable[[SignerCluster], None] | None = None
    admin_token: str = ADMIN_TOKEN

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ValueError(f"a stack needs at least one replica, not {self.replicas}")


@dataclass
class ReplicasStack(FrontCalls):
    """The running stack. Replicas are numbered from 1, as signers are: `gateways[0]` is
    replica 1, named "gateway-1"."""

    directory: Path
    background: BackgroundLoop
    issuer: LocalOidcIssuer
    ca: CertificateAuthority
    cluster: SignerCluster
    redis: RedisProcess
    gateways: list[GatewayProcess]
    echo: EchoUpstream
    front: EnvoyProcess
    edge_ca: Path  # verifies the front listener's certificate
    env: Mapping[str, str]  # what every replica's environment holds besides its own ports and files
    admin_token: str = ADMIN_TOKEN
    _client_files: dict[str, tuple[Path, Path]] = field(default_factory=dict)

    def svid(self, path: str) -> IssuedCertificate:
        """An X.509-SVID for `path` in the stack's trust domain, valid now."""
        return self.ca.issue_svid(f"spiffe://{TRUST_DOMAIN}{path}", **valid_now())

    def gateway(self, replica: int) -> GatewayProcess:
        if not 1 <= replica <= len(self.gateways):
            raise IndexError(f"no replica {replica}: they are 1 to {len(self.gateways)}")
        return self.gateways[replica - 1]

    # --- through the front Envoy ---------------------------------------------------------------

    # --- straight to one replica ----------------------------------------------------------------

    def check(self, replica: int, message: CheckRequest) -> CheckResponse:
        """One Check on replica `replica`'s Check port, as Envoy makes it (its certificate)."""
        port = self.gateway(replica).grpc_port

        async def call() -> CheckResponse:
            async with envoy_channel(self.directory, f"127.0.0.1:{port}") as channel:
                stub = external_auth_pb2_grpc.AuthorizationStub(channel)
                response: CheckResponse = await stub.Check(message, timeout=10)
                return response

        return self.background.run(call())

    def http(
        self, replica: int, method: str, path: str, document: object | None = None
    ) -> tuple[int, Mapping[str, str], bytes]:
        """An HTTP call to replica `replica`'s edge with the admin token, `document` as JSON: its
        status, headers and body."""
        url = f"http://127.0.0.1:{self.gateway(replica).http_port}{path}"
        data = None if document is None else json.dumps(document).encode()
        headers = {"Authorization": f"Bearer {self.admin_token}"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        outgoing = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            # http://127.0.0.1 built above: no other scheme reaches here.
            with urllib.request.urlopen(outgoing, timeout=30) as reply:  # noqa: S310
                return int(reply.status), dict(reply.headers), reply.read()
        except urllib.error.HTTPError as error:
            return int(error.code), dict(error.headers), error.read()

    # --- where things are ---------------------------------------------------------------------

    def gateway_audit(self, replica: int) -> Path:
        return Path(self.gateway(replica).env["KEYMINT_AUDIT_LOG"])

    def signer_audit(self, identifier: int) -> Path:
        return Path(self.cluster.signers[identifier].env["KEYMINT_SIGNER_AUDIT_LOG"])

    def audit_logs(self) -> dict[str, Path]:
        """Every process's audit log, by process name."""
        logs = {f"gateway-{i}": self.gateway_audit(i) for i in range(1, len(self.gateways) + 1)}
        logs.update({f"signer-{i}": self.signer_audit(i) for i in sorted(self.cluster.signers)})
        return logs

    def pids(self) -> dict[str, int]:
        """Every process of the stack that is running, by name ("gateway-1", "signer-3",
        "redis", "envoy")."""
        found: dict[str, int] = {}
        for i, gateway in enumerate(self.gateways, start=1):
            if gateway.process is not None and gateway.alive():
                found[f"gateway-{i}"] = gateway.process.pid
        for i, signer in sorted(self.cluster.signers.items()):
            if signer.process is not None and signer.process.poll() is None:
                found[f"signer-{i}"] = signer.process.pid
        if self.redis.process is not None and self.redis.alive():
            found["redis"] = self.redis.process.pid
        if self.front.process is not None and self.front.process.poll() is None:
            found["envoy"] = self.front.process.pid
        return found


def balance_over_replicas(config: str, gateways: Sequence[GatewayProcess]) -> str:
    """envoy.yaml with its keymint clusters pointed at every replica (round robin, Envoy's
    default), health-checked every second so a replica that died is left out quickly."""
    document: dict[str, Any] = yaml.safe_load(config)
    for cluster in document["static_resources"]["clusters"]:
        port_of = BALANCED_CLUSTERS.get(cluster["name"])
        if port_of is None:
            continue
        cluster["lb_policy"] = "ROUND_ROBIN"
        endpoints = [
            {
                "endpoint": {
                    "address": {
                        "socket_address": {
                            "address": "127.0.0.1",
                            "port_value": getattr(gateway, port_of),
                        }
                    }
                }
            }
            for gateway in gateways
        ]
        cluster["load_assignment"]["endpoints"] = [{"lb_endpoints": endpoints}]
        for health_check in cluster.get("health_checks", []):
            health_check["interval"] = "1s"
            health_check["unhealthy_threshold"] = 1
    return yaml.safe_dump(document, sort_keys=False)


S = TypeVar("S", bound=ReplicasStack)


@overload
def replicas_stack(
    directory: Path, *, settings: ReplicaSettings | None = None
) -> AbstractContextManager[ReplicasStack]: ...


@overload
def replicas_stack(
    directory: Path, *, settings: ReplicaSettings | None = None, kind: type[S]
) -> AbstractContextManager[S]: ...


def replicas_stack(
    directory: Path,
    *,
    settings: ReplicaSettings | None = None,
    kind: type[ReplicasStack] = ReplicasStack,
) -> AbstractContextManager[ReplicasStack]:
    """Start everything in `directory`; stop whatever is still running at the end, whatever
    happened. The stack yielded is a `kind` (a subclass whose own fields have defaults)."""
    return _replicas_stack(directory, settings or ReplicaSettings(), kind)


@contextlib.contextmanager
def _replicas_stack(
    directory: Path, settings: ReplicaSettings, kind: type[ReplicasStack]
) -> Iterator[ReplicasStack]:
    with contextlib.ExitStack() as stack:
        background = BackgroundLoop()
        stack.callback(background.close)
        issuer = LocalOidcIssuer(clock=time.time, audience=OIDC_AUDIENCE)
        background.run(issuer.start())
        stack.callback(lambda: background.run(issuer.stop()))
        echo = EchoUpstream()
        background.run(echo.start())
        stack.callback(lambda: background.run(echo.stop()))

        redis_dir = directory / "redis"
        redis_dir.mkdir()
        redis_server = RedisProcess(redis_dir, REDIS_PASSWORDS)
        credentials = {
            user: write_credentials(directory / f"redis-{user}.credentials", user, password)
            for user, password in REDIS_PASSWORDS.items()
        }

        ca = root_ca(TRUST_DOMAIN)
        (directory / "trust-bundle.pem").write_bytes(pem(ca.certificate))
        cluster = SignerCluster(directory, 2, 3)
        assert cluster.package is not None
        env = {
            **stack_env(directory, issuer.issuer),
            "KEYMINT_TRUST_ROOT": str(
                write_trust_root(directory, cluster.package.group_public_key)
            ),
            "KEYMINT_REDIS_URL": redis_server.url,
        }
        for identifier, signer in cluster.signers.items():
            audit = audit_directory(directory, f"signer-{identifier}")
            audit.mkdir(exist_ok=True)
            signer.env.update(env)
            signer.env["KEYMINT_REDIS_CREDENTIALS_FILE"] = str(credentials["signer"])
            signer.env["KEYMINT_SIGNER_AUDIT_LOG"] = str(audit / "audit.jsonl")
            signer.env.update(settings.signer_env)
        if settings.prepare is not None:
            settings.prepare(cluster)

        stack.callback(redis_server.stop)
        redis_server.start()
        stack.callback(cluster.stop)
        cluster.start()

        shared = {
            **env,
            "KEYMINT_SIGNERS": ",".join(
                f"{i}={p.address}" for i, p in sorted(cluster.signers.items())
            ),
            "KEYMINT_REDIS_CREDENTIALS_FILE": str(credentials["gateway"]),
            "KEYMINT_ADMIN_TOKEN_SHA256": hashlib.sha256(settings.admin_token.encode()).hexdigest(),
            **settings.gateway_env,
        }
        gateways = []
        for index in range(1, settings.replicas + 1):
            audit = audit_directory(directory, f"gateway-{index}")
            audit.mkdir(exist_ok=True)
            replica_env = {
                **os.environ,
                **shared,
                # Fixed ports: a restarted replica comes back where Envoy sends its traffic.
                "KEYMINT_GRPC_LISTEN": f"127.0.0.1:{free_port()}",
                "KEYMINT_HTTP_LISTEN": f"127.0.0.1:{free_port()}",
                "KEYMINT_STATE_DIR": str(directory / f"gateway-{index}"),
                "KEYMINT_AUDIT_LOG": str(audit / "audit.jsonl"),
            }
            gateway = GatewayProcess(env=replica_env, log=directory / f"gateway-{index}.log")
            stack.callback(gateway.stop)
            gateway.start()
            gateways.append(gateway)

        front, edge_ca = _front_envoy(directory, gateways, echo)
        stack.callback(front.stop)
        front.start()

        yield kind(
            directory=directory,
            background=background,
            issuer=issuer,
            ca=ca,
            cluster=cluster,
            redis=redis_server,
            gateways=gateways,
            echo=echo,
            front=front,
            edge_ca=edge_ca,
            env=shared,
            admin_token=settings.admin_token,
        )


def _front_envoy(
    directory: Path, gateways: Sequence[GatewayProcess], echo: EchoUpstream
) -> tuple[EnvoyProcess, Path]:
    """The front Envoy (not started) balancing over `gateways`, and the CA of its certificate."""
    front, edge_ca = front_envoy(
        directory,
        grpc_port=gateways[0].grpc_port,
        http_port=gateways[0].http_port,
        upstream_port=echo.port,
    )
    front.config.write_text(balance_over_replicas(front.config.read_text(), gateways))
    return front, edge_ca
