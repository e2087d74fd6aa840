"""Three gateway replicas, one Redis, three signers and one Envoy, every one a real process.

    caller --mTLS--> front Envoy (envoy/envoy.yaml; keymint_grpc and keymint_http balance the three
                     replicas round robin) --Check, mTLS--> gateway 1 | gateway 2 | gateway 3
                                                                 \\         |         /
                                               redis-server (ACL users, AOF) + 3 signer processes

The replicas and the signers reach Redis as docs/operations.md says: the gateways as an ACL user
that may use keymint's keys only, the signers as a read-only user that may read revocations and
listen for them; their passwords come from files. Each replica keeps its own state directory and
audit log, and listens on fixed ports so a restarted replica comes back where Envoy expects it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import yaml
from envoy.service.auth.v3 import external_auth_pb2_grpc
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse

from extauthz.config import GatewaySettings
from extauthz.dev.calls import envoy_channel
from extauthz.dev.envoy import (
    EnvoyProcess,
    check_port_values,
    render,
    server_certificate,
    write_tls,
)
from extauthz.dev.gateway import GatewayProcess
from extauthz.dev.github import LocalOidcIssuer
from extauthz.dev.servers import BackgroundLoop, EchoUpstream, Reply, request
from extauthz.dev.settings import (
    OIDC_AUDIENCE,
    TRUST_DOMAIN,
    root_ca,
    stack_env,
    valid_now,
    write_trust_root,
)
from extauthz.model import Route
from extauthz.policy import AuthzRequest, Denial
from extauthz.server.app import build_identifier, build_policy_engine
from extauthz.server.claims import confirmation_claim, provenance_claims
from extauthz.server.mint import evidence_message
from signer.coordinator import Coordinator
from signer.frost import trusted_dealer_keygen
from signer.token import header_for, signing_input
from tests.conftest import REPO
from tests.helpers.certs import CertificateAuthority, IssuedCertificate, pem
from tests.signer.harness import SignerCluster

ADMIN_TOKEN = "replicas-admin-token"
FRONT_HOSTNAME = "front.keymint.test"
REPLICAS = 3
RATE_PER_SECOND = 5
RATE_BURST = 10
MAX_STALENESS_SECONDS = 2.0
SYNC_SECONDS = 0.25
PUBLISH_LEAD_SECONDS = 1
# docs/operations.md, "Redis users": what each party may do, and nothing else.
GATEWAY_ACL = (
    "on ~keymint:* &keymint:* -@all +@read +@write +@scripting +@pubsub +@transaction "
    "+@connection +time"
)
SIGNER_ACL = (
    "on resetkeys ~keymint:revoked:* resetchannels &keymint:events -@all "
    "+get +zrangebyscore +subscribe +unsubscribe +ping +client"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class RedisProcess:
    """redis-server on loopback with ACL users and an append-only file in `directory`."""

    directory: Path
    users: Mapping[str, str]  # name -> password
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        server = shutil.which("redis-server")
        assert server is not None, "redis-server is required (make setup installs it)"
        acl = self.directory / "users.acl"
        acl.write_text(
            "user default off\n"
            + "".join(
                f"user {name} {GATEWAY_ACL if name == 'gateway' else SIGNER_ACL} "
                f"#{hashlib.sha256(password.encode()).hexdigest()}\n"
                for name, password in self.users.items()
            )
            + "user admin on ~* &* +@all #"
            + hashlib.sha256(b"admin").hexdigest()
            + "\n"
        )
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
        deadline = time.monotonic() + 10
        while True:
            try:
                self.admin().ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def admin(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, username="admin", password="admin")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait()


@dataclass
class ReplicasStack:
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
    second_key: bytes  # a key every signer holds beside the first, for the rotation test
    _client_files: dict[str, tuple[Path, Path]] = field(default_factory=dict)

    def svid(self, path: str) -> IssuedCertificate:
        return self.ca.issue_svid(f"spiffe://{TRUST_DOMAIN}{path}", **valid_now())

    # --- straight to one replica, as Envoy ------------------------------------------------------

    def check(self, replica: int, request: CheckRequest) -> CheckResponse:
        port = self.gateways[replica].grpc_port

        async def call() -> CheckResponse:
            async with envoy_channel(self.directory, f"127.0.0.1:{port}") as channel:
                stub = external_auth_pb2_grpc.AuthorizationStub(channel)
                response: CheckResponse = await stub.Check(request, timeout=10)
                return response

        return self.background.run(call())

    def http(
        self, replica: int, method: str, path: str, document: object | None = None
    ) -> tuple[int, Mapping[str, str], bytes]:
        """An HTTP call to one replica's edge, with the admin token."""
        url = f"http://127.0.0.1:{self.gateways[replica].http_port}{path}"
        data = None if document is None else json.dumps(document).encode()
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        outgoing = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(outgoing, timeout=30) as reply:
                return reply.status, dict(reply.headers), reply.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def revoke(self, replica: int, **document: object) -> tuple[int, dict[str, Any]]:
        status, _, body = self.http(replica, "POST", "/admin/revoke", document)
        answer: dict[str, Any] = json.loads(body)
        return status, answer

    # --- through the front Envoy ---------------------------------------------------------------

    def front_call(
        self,
        method: str,
        path: str,
        *,
        certificate: IssuedCertificate | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        import ssl

        context = ssl.create_default_context(cafile=str(self.edge_ca))
        if certificate is not None:
            name = f"client-{certificate.certificate.serial_number:x}"
            if name not in self._client_files:
                self._client_files[name] = write_tls(self.directory, name, certificate)
            cert, key = self._client_files[name]
            context.load_cert_chain(str(cert), str(key))
        url = f"https://127.0.0.1:{self.front.port('front_tls')}{path}"
        return self.background.run(request(method, url, headers, None, context, FRONT_HOSTNAME))

    # --- the replicas as processes --------------------------------------------------------------

    def kill_replicas(self) -> None:
        for gateway in self.gateways:
            gateway.kill()

    def start_replicas(self) -> None:
        for gateway in self.gateways:
            gateway.start()

    # --- the gateway's code, pointed at the signers (as a compromised gateway would) -------------

    def rogue(self, certificate: IssuedCertificate) -> Rogue:
        """The gateway's code and coordinator credentials, ready to ask each pair of signers for
        an honest token for `certificate`'s caller (connected now, so asking later is one round
        trip)."""
        return self.background.run(Rogue.start(self, certificate), timeout=60)


class Rogue:
    """What every replica would send the signers for one caller, sent by hand."""

    PAIRS = ((1, 2), (2, 3), (1, 3))

    def __init__(self, stack: ReplicasStack, build: Any, coordinators: dict[Any, Any]) -> None:
        self._stack = stack
        self._build = build
        self._coordinators = coordinators

    @classmethod
    async def start(cls, stack: ReplicasStack, certificate: IssuedCertificate) -> Rogue:
        import aiohttp

        settings = GatewaySettings.from_env({**stack.env, "KEYMINT_SIGNERS": ""})
        async with aiohttp.ClientSession() as session:
            identifier = build_identifier(settings, session, time.time)
        engine = build_policy_engine(settings)[0]
        assert identifier.certificates is not None
        identity = identifier.certificates.verify_envoy_certificate(
            urllib.parse.quote(certificate.pem.decode(), safe="")
        )
        route = Route("api.internal", "/v1/orders", "GET", {"route": "orders"})
        authz = AuthzRequest(identity, route)
        snapshot = engine.snapshot()
        grant = engine.evaluate(authz, snapshot)
        assert not isinstance(grant, Denial), grant
        coordinators = {}
        for pair in cls.PAIRS:
            coordinator = Coordinator(
                endpoints=stack.cluster.endpoints(pair), tls=stack.cluster.coordinator_tls
            )
            await coordinator.start()
            coordinators[pair] = coordinator

        def build(key: bytes) -> tuple[bytes, Any]:
            now = int(time.time())
            claims: dict[str, object] = {
                **provenance_claims(identity),
                "iss": settings.issuer,
                "sub": identity.subject,
                "aud": grant.audience,
                "scope": " ".join(grant.scopes),
                "iat": now,
                "nbf": now,
                "exp": now + 60,
                "jti": str(uuid.uuid4()),
            }
            cnf = confirmation_claim(identity)
            if cnf is not None:
                claims["cnf"] = cnf
            return signing_input(header_for(key), claims), evidence_message(authz, snapshot.digest)

        return cls(stack, build, coordinators)

    def sign(self, pair: tuple[int, int], kid: str) -> object:
        """The signature, or the exception the signers' answers raised."""

        async def attempt() -> object:
            coordinator = self._coordinators[pair]
            key = bytes(coordinator.packages[kid].group_public_key)
            message, evidence = self._build(key)
            try:
                return await coordinator.sign(message, evidence=evidence, timeout=5)
            except Exception as exc:  # the signers' answer is what the test reads
                return exc

        return self._stack.background.run(attempt(), timeout=30)

    def close(self) -> None:
        async def close_all() -> None:
            for coordinator in self._coordinators.values():
                await coordinator.close()

        self._stack.background.run(close_all())


def _write_secret(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def _balance_over_replicas(config: Path, gateways: list[GatewayProcess]) -> None:
    """Point envoy.yaml's keymint clusters at every replica (round robin, Envoy's default), with
    health checks every second so a replica that died is left out quickly."""
    document = yaml.safe_load(config.read_text())
    for cluster in document["static_resources"]["clusters"]:
        if cluster["name"] not in ("keymint_grpc", "keymint_http"):
            continue
        port_of = "grpc_port" if cluster["name"] == "keymint_grpc" else "http_port"
        cluster["lb_policy"] = "ROUND_ROBIN"
        cluster["load_assignment"]["endpoints"] = [
            {
                "lb_endpoints": [
                    {
                        "endpoint": {
                            "address": {
                                "socket_address": {
                                    "address": "127.0.0.1",
                                    "port_value": getattr(g, port_of),
                                }
                            }
                        }
                    }
                    for g in gateways
                ]
            }
        ]
        for check in cluster.get("health_checks", []):
            check["interval"] = "1s"
            check["unhealthy_threshold"] = 1
    config.write_text(yaml.safe_dump(document, sort_keys=False))


@contextlib.contextmanager
def replicas_stack(directory: Path) -> Iterator[ReplicasStack]:
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
        passwords = {"gateway": "gateway-password-1", "signer": "signer-password-1"}
        redis_server = RedisProcess(redis_dir, passwords)
        stack.callback(redis_server.stop)
        redis_server.start()
        url = f"redis://127.0.0.1:{redis_server.port}/0"

        ca = root_ca(TRUST_DOMAIN)
        (directory / "trust-bundle.pem").write_bytes(pem(ca.certificate))
        cluster = SignerCluster(directory, 2, 3)
        assert cluster.package is not None
        shares, package, _ = trusted_dealer_keygen(2, 3)
        for share in shares:
            cluster.seal_key(share.identifier, share, package)
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
        for signer in cluster.signers.values():
            signer.env.update(env)
            signer.env["KEYMINT_REDIS_CREDENTIALS_FILE"] = str(signer_credentials)
        stack.callback(cluster.stop)
        cluster.start()

        gateway_credentials = _write_secret(
            directory / "redis-gateway.credentials", f"gateway:{passwords['gateway']}"
        )
        signers = ",".join(f"{i}={p.address}" for i, p in sorted(cluster.signers.items()))
        gateways = []
        for index in range(1, REPLICAS + 1):
            state = directory / f"gateway-{index}"
            gateway_env = {
                **os.environ,
                **env,
                "PYTHONPATH": str(REPO),
                "KEYMINT_SIGNERS": signers,
                "KEYMINT_REDIS_CREDENTIALS_FILE": str(gateway_credentials),
                "KEYMINT_GRPC_LISTEN": f"127.0.0.1:{free_port()}",
                "KEYMINT_HTTP_LISTEN": f"127.0.0.1:{free_port()}",
                "KEYMINT_STATE_DIR": str(state),
                "KEYMINT_AUDIT_LOG": str(state / "audit.jsonl"),
                "KEYMINT_ADMIN_TOKEN_SHA256": hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest(),
                "KEYMINT_RATE_PER_SECOND": str(RATE_PER_SECOND),
                "KEYMINT_RATE_BURST": str(RATE_BURST),
                "KEYMINT_STATE_SYNC_SECONDS": str(SYNC_SECONDS),
                "KEYMINT_STATE_MAX_STALENESS_SECONDS": str(MAX_STALENESS_SECONDS),
                "KEYMINT_KEY_PUBLISH_LEAD_SECONDS": str(PUBLISH_LEAD_SECONDS),
            }
            gateway = GatewayProcess(env=gateway_env, log=directory / f"gateway-{index}.log")
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

        yield ReplicasStack(
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
            second_key=bytes(package.group_public_key),
        )


def wait_until(predicate: Any, timeout: float, interval: float = 0.02) -> float:
    """Seconds until `predicate()` held (polled every `interval`); AssertionError after timeout."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s")
        time.sleep(interval)
    return time.monotonic() - started
