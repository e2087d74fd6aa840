"""What the key attacks need: the attacker's own key and web site, raw signer stubs holding the
coordinator's TLS identity, the extauthz commands as processes, and a small gateway stack whose
signers a test prepares before they start."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from extauthz.dev.gateway import GatewayProcess
from extauthz.dev.github import LocalOidcIssuer
from extauthz.dev.servers import BackgroundLoop
from extauthz.dev.settings import (
    DEPLOY,
    ISSUER,
    OIDC_AUDIENCE,
    TRUST_DOMAIN,
    root_ca,
    stack_env,
    write_trust_root,
)
from signer.endorsement import endorsement_message
from signer.proto import signer_pb2_grpc
from signer.tls import secure_channel
from signer.token import compact, header_for, kid_for, public_jwk, signing_input
from tests.helpers.certs import pem
from tests.signer.harness import SignerCluster

REPO = Path(__file__).resolve().parents[2]


class AttackerKey:
    """An Ed25519 key the attacker made itself: no signer holds any share of it."""

    def __init__(self) -> None:
        self.private = Ed25519PrivateKey.generate()
        self.public = self.private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.kid = kid_for(self.public)

    def token(self, *, audience: str = DEPLOY, subject: str = "attacker") -> str:
        """A token in keymint's exact format, for any subject, signed by the attacker alone."""
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": subject,
            "aud": audience,
            "scope": "deploy:read deploy:write",
            "iat": now,
            "nbf": now,
            "exp": now + 600,
            "jti": f"forged-{now}",
        }
        message = signing_input(header_for(self.public), claims)
        return compact(message, self.private.sign(message))

    def self_endorsement(self) -> str:
        """An endorsement of its own key, signed by itself: the best forgery it can make."""
        message = endorsement_message(
            self.public, self.public, issuer=ISSUER, issued_at=int(time.time())
        )
        return compact(message, self.private.sign(message))


@dataclass
class AttackerSite:
    """A web server the attacker runs, serving whatever JWKS and endorsements it likes."""

    background: BackgroundLoop
    documents: dict[str, Any] = field(default_factory=dict)  # path -> JSON document
    port: int = 0
    _runner: web.AppRunner | None = None

    def __enter__(self) -> AttackerSite:
        async def serve(request: web.Request) -> web.Response:
            return web.json_response(self.documents[request.path])

        async def start() -> None:
            app = web.Application()
            app.router.add_get("/{tail:.*}", serve)
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", 0).start()
            self.port = int(self._runner.addresses[0][1])

        self.background.run(start())
        return self

    def __exit__(self, *_: object) -> None:
        if self._runner is not None:
            self.background.run(self._runner.cleanup())

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def signer_stubs(cluster: SignerCluster) -> tuple[list[Any], dict[int, Any]]:
    """Stubs to every signer, on channels with the coordinator's certificate (the gateway's)."""
    channels = [
        secure_channel(p.address, cluster.coordinator_tls, f"signer-{i}")
        for i, p in sorted(cluster.signers.items())
    ]
    stubs = {
        i: signer_pb2_grpc.SignerStub(channel)  # type: ignore[no-untyped-call]
        for i, channel in zip(sorted(cluster.signers), channels, strict=True)
    }
    return channels, stubs


def extauthz(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m extauthz.cli ARGS` as an operator (or a verifier) runs it."""
    return subprocess.run(
        [sys.executable, "-m", "extauthz.cli", *args],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@dataclass
class SmallStack:
    """Signer processes and the gateway process, no Envoy: for attacks on adopting keys."""

    directory: Path
    background: BackgroundLoop
    issuer: LocalOidcIssuer
    cluster: SignerCluster
    gateway: GatewayProcess

    def log(self) -> str:
        return (self.directory / "gateway.log").read_text(errors="replace")


@contextlib.contextmanager
def small_stack(
    directory: Path,
    *,
    dealer: bool,
    prepare: Callable[[SignerCluster], None],
    root_key: Callable[[SignerCluster], bytes],
    t: int = 2,
    n: int = 3,
) -> Iterator[SmallStack]:
    """Signers prepared by `prepare` before they start (n of them, a dealer's t-of-n key if
    `dealer`); the gateway (FROST_T=t of FROST_N=n), pinned to `root_key`, is started by the test
    (`stack.gateway.start()`), which may expect it to fail."""
    with contextlib.ExitStack() as stack:
        background = BackgroundLoop()
        stack.callback(background.close)
        issuer = LocalOidcIssuer(clock=time.time, audience=OIDC_AUDIENCE)
        background.run(issuer.start())
        stack.callback(lambda: background.run(issuer.stop()))
        (directory / "trust-bundle.pem").write_bytes(pem(root_ca(TRUST_DOMAIN).certificate))
        cluster = SignerCluster(directory, t, n, dealer=dealer)
        prepare(cluster)
        env = stack_env(directory, issuer.issuer)
        env["KEYMINT_TRUST_ROOT"] = str(write_trust_root(directory, root_key(cluster)))
        for process in cluster.signers.values():
            process.env.update(env)
        stack.callback(cluster.stop)
        cluster.start()
        signers = ",".join(f"{i}={p.address}" for i, p in sorted(cluster.signers.items()))
        gateway = GatewayProcess(
            env={
                **os.environ,
                **env,
                "KEYMINT_SIGNERS": signers,
                "FROST_N": str(n),
                "FROST_T": str(t),
                "PYTHONPATH": str(REPO),
            },
            log=directory / "gateway.log",
        )
        stack.callback(gateway.stop)
        yield SmallStack(directory, background, issuer, cluster, gateway)


def jwks_with(served: dict[str, Any], key: AttackerKey) -> dict[str, Any]:
    return {"keys": [*served["keys"], public_jwk(key.public)]}


def json_of(reply_body: bytes) -> Any:
    return json.loads(reply_body)
