"""The local stack: keymint as production runs it, every part real, on loopback, for development.

    caller --TLS/mTLS--> front Envoy (envoy/envoy.yaml) --ext_authz gRPC, mTLS--> gateway process
                              |                                                | mTLS gRPC
                              +--> echo upstream                      3 signer processes (2-of-3)
    caller ----------------> jwt Envoy (envoy/upstream-jwt.yaml) --> echo upstream
                              +-- local_jwks: keys `extauthz pin-keys` chained from the trust root

The gateway is `python -m extauthz.cli serve` with extauthz.dev.settings' environment; the signers
are `SignerCluster`'s processes with the same environment, so their guards check the same policy.
The local OIDC issuer (GitHub's shape), the other issuers and the IdP (`workloads`) and the echo
upstream run in this process, on an event loop in a background thread, as do the callers' HTTP
clients. Ports are all chosen by the OS (port 0) and read back: the gateway prints them, Envoy's
admin API lists its listeners.

What makes it a development stack: a development CA for callers and for the Check port, key
shares from a trusted dealer (or a DKG among the signers, `dkg=True`) sealed with a passphrase
from the environment, plain HTTP to the stand-in issuers, and every key made on this machine.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt

from extauthz.config import CHECK_TLS_VARIABLES
from extauthz.dev.certs import CertificateAuthority, IssuedCertificate, pem
from extauthz.dev.envoy import (
    JWT_LISTENER,
    EnvoyProcess,
    FrontCalls,
    front_envoy,
    render,
)
from extauthz.dev.gateway import GatewayProcess, pin_keys
from extauthz.dev.github import LocalOidcIssuer
from extauthz.dev.servers import BackgroundLoop, EchoUpstream, Reply, request
from extauthz.dev.settings import (
    DEPLOY,
    ISSUER,
    OIDC_AUDIENCE,
    ORDERS,
    TRUST_DOMAIN,
    root_ca,
    stack_env,
    valid_now,
    write_trust_root,
)
from extauthz.dev.signers import SignerCluster
from extauthz.dev.workloads import Workloads

REQUIRED_CLAIMS = ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]


@dataclass
class LocalStack(FrontCalls):
    directory: Path
    background: BackgroundLoop
    issuer: LocalOidcIssuer
    ca: CertificateAuthority
    cluster: SignerCluster
    gateway: GatewayProcess
    echo: EchoUpstream
    front: EnvoyProcess
    jwt_envoy: EnvoyProcess
    edge_ca: Path  # verifies the front listener's certificate
    env: Mapping[str, str] = field(default_factory=dict)  # the gateway's and signers' settings
    workloads: Workloads | None = None  # Kubernetes, GitLab, SPIRE and the IdP, when asked for
    pinned_jwks: Path = field(default_factory=Path)  # the jwt Envoy's local_jwks
    _client_files: dict[str, tuple[Path, Path]] = field(default_factory=dict)

    # --- identities ---------------------------------------------------------------------------

    def svid(self, path: str) -> IssuedCertificate:
        """An X.509-SVID for `path` in the stack's trust domain, valid now."""
        return self.ca.issue_svid(self.svid_id(path), **valid_now())

    @staticmethod
    def svid_id(path: str) -> str:
        return f"spiffe://{TRUST_DOMAIN}{path}"

    def oidc_token(self, **claims: Any) -> str:
        return self.issuer.mint(claims or None)

    # --- calls --------------------------------------------------------------------------------

    def jwt_call(self, path: str, *, bearer: str | None = None) -> Reply:
        """A request to the upstream-side jwt_authn Envoy (plain HTTP on loopback)."""
        headers = {} if bearer is None else {"authorization": f"Bearer {bearer}"}
        url = f"http://127.0.0.1:{self.jwt_envoy.port(JWT_LISTENER)}{path}"
        return self.background.run(request("GET", url, headers, None, None, None))

    # --- the keys the jwt Envoy pins --------------------------------------------------------

    def pin_keys(self) -> str:
        """envoy/README.md's step: `extauthz pin-keys` against the gateway's endorsements."""
        return pin_keys(self.env, self.gateway.http_port, self.pinned_jwks)

    def reload_jwt_envoy(self) -> None:
        """envoy/README.md's next step: a hot restart, so jwt_authn loads the pinned file."""
        self.jwt_envoy.hot_restart()

    # --- the served JWKS ----------------------------------------------------------------------

    def jwks(self) -> dict[str, Any]:
        """keymint's JWKS, fetched through the front Envoy as an upstream API would."""
        reply = self.front_call("GET", "/.well-known/jwks.json")
        assert reply.status == 200, reply.body
        document: dict[str, Any] = reply.json()
        return document

    def decode(self, token: str, audience: str) -> dict[str, Any]:
        """Verify a minted token with PyJWT against the served JWKS; its claims."""
        keys = jwt.PyJWKSet.from_dict(self.jwks())
        kid = jwt.get_unverified_header(token)["kid"]
        key = next(k for k in keys.keys if k.key_id == kid)
        claims: dict[str, Any] = jwt.decode(
            token,
            key.key,
            algorithms=["EdDSA"],
            audience=audience,
            issuer=ISSUER,
            options={"require": REQUIRED_CLAIMS},
        )
        return claims


async def _dkg(cluster: SignerCluster, threshold: int) -> bytes:
    from signer.ceremony.driver import connect

    addresses = cluster.addresses(sorted(cluster.signers))
    async with connect(addresses, tls_files=cluster.operator_tls) as driver:
        return (await driver.dkg(threshold)).group_public_key


@contextlib.contextmanager
def local_stack(
    directory: Path,
    *,
    dkg: bool = False,
    extra_env: Mapping[str, str] | None = None,
    unset: Collection[str] = (),
    check_socket: Path | None = None,
    front_config: Callable[[str], str] | None = None,
    workloads: bool = False,
    idp_interval: int = 1,
    signers: int = 3,
    threshold: int = 2,
) -> Iterator[LocalStack]:
    """Start everything, and stop everything whatever happened.

    `signers` signer processes hold a `threshold`-of-`signers` key. With `dkg`, they start
    keyless and a DKG among them makes the group key (as `make demo` does); otherwise a trusted
    dealer's shares are sealed to their vaults first.
    `extra_env` adds to (or replaces) the gateway's and the signers' settings; `unset` names
    settings of the stack's own they must not have at all (`POLICY_FILE`, for a Rego policy that
    decides alone).
    The gateway's Check port is mTLS (Envoy's certificate); with `check_socket`, it is a Unix
    socket there instead, and `front_config` must point the front Envoy's keymint_grpc cluster
    at it (envoy/README.md's cluster). `front_config` rewrites the front Envoy's rendered config.
    With `workloads`, the issuers of extauthz.dev.workloads (a cluster, GitLab, SPIRE, an IdP
    polled every `idp_interval` seconds) are trusted through KEYMINT_ISSUERS_FILE as well as
    GitHub.
    """
    with contextlib.ExitStack() as stack:
        background = BackgroundLoop()
        stack.callback(background.close)

        others = None
        if workloads:
            others = background.run(Workloads.start(directory, idp_interval=idp_interval))
            stack.callback(lambda: background.run(others.stop()))
            issuer = others.github
        else:
            issuer = LocalOidcIssuer(clock=time.time, audience=OIDC_AUDIENCE)
            background.run(issuer.start())
            stack.callback(lambda: background.run(issuer.stop()))
        echo = EchoUpstream()
        background.run(echo.start())
        stack.callback(lambda: background.run(echo.stop()))

        ca = root_ca(TRUST_DOMAIN)
        (directory / "trust-bundle.pem").write_bytes(pem(ca.certificate))
        cluster = SignerCluster(directory, threshold, signers, dealer=not dkg)
        env = {
            **stack_env(directory, issuer.issuer),
            **(others.env() if others is not None else {}),
            **(extra_env or {}),
        }
        for name in unset:
            env.pop(name, None)
        for signer in cluster.signers.values():
            signer.env.update(env)
        stack.callback(cluster.stop)
        cluster.start()
        if dkg:
            first_key = background.run(_dkg(cluster, threshold))
        else:
            assert cluster.package is not None
            first_key = cluster.package.group_public_key
        # Operators pin the first group key (the DKG's, or the dealer's in development).
        env["KEYMINT_TRUST_ROOT"] = str(write_trust_root(directory, first_key))

        addresses = ",".join(f"{i}={p.address}" for i, p in sorted(cluster.signers.items()))
        gateway_env = {
            **os.environ,
            **env,
            "KEYMINT_SIGNERS": addresses,
            "FROST_N": str(signers),
            "FROST_T": str(threshold),
        }
        if check_socket is not None:
            for name in CHECK_TLS_VARIABLES:
                del gateway_env[name]
            gateway_env["KEYMINT_GRPC_LISTEN"] = f"unix:{check_socket}"
        gateway = GatewayProcess(env=gateway_env, log=directory / "gateway.log")
        stack.callback(gateway.stop)
        gateway.start()

        front, edge_ca = front_envoy(
            directory,
            grpc_port=gateway.grpc_port,
            http_port=gateway.http_port,
            upstream_port=echo.port,
        )
        if front_config is not None:
            front.config.write_text(front_config(front.config.read_text()))
        stack.callback(front.stop)
        front.start()

        pinned_jwks = directory / "keymint-jwks.json"
        pin_keys(env, gateway.http_port, pinned_jwks)
        jwt_values: dict[str, object] = {
            "ADMIN_PORT": 0,
            "LISTEN_ADDRESS": "127.0.0.1",
            "LISTEN_PORT": 0,
            "KEYMINT_ISSUER": ISSUER,
            "PINNED_JWKS_FILE": pinned_jwks,
            "ORDERS_AUDIENCE": ORDERS,
            "DEPLOY_AUDIENCE": DEPLOY,
            "APP_PORT": echo.port,
        }
        jwt_envoy = EnvoyProcess(
            render("upstream-jwt.yaml", directory, **jwt_values), directory, "jwt-envoy"
        )
        stack.callback(jwt_envoy.stop)
        jwt_envoy.start()
        # A hot restart hands the listening socket over by address: name the port it got.
        render(
            "upstream-jwt.yaml",
            directory,
            **{**jwt_values, "LISTEN_PORT": jwt_envoy.port(JWT_LISTENER)},
        )

        yield LocalStack(
            directory=directory,
            background=background,
            issuer=issuer,
            ca=ca,
            cluster=cluster,
            gateway=gateway,
            echo=echo,
            front=front,
            jwt_envoy=jwt_envoy,
            edge_ca=edge_ca,
            env=env,
            pinned_jwks=pinned_jwks,
            workloads=others,
        )
