"""Signer processes on loopback for the local stack: mTLS from a dev PKI, ports of 0, and key
shares from a trusted dealer sealed to files (or no key, for a DKG among them).

The shares are sealed with a passphrase from the environment (the sealed-file vault, development
only); production seals them with an HSM or a YubiKey (signer/vault).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from extauthz.dev.processes import kill_process, stop_process
from extauthz.dev.settings import ISSUER
from signer.coordinator import SignerEndpoint
from signer.devca import TlsFiles, make_dev_pki, operator_name, spiffe_id, tls_files
from signer.frost import KeyShare, PublicKeyPackage, trusted_dealer_keygen
from signer.frost.encoding import encode_key_share, encode_public_key_package
from signer.vault.config import store_share
from signer.vault.sealed_file import SealedFileVault

# The sealed-file vault's passphrase: development only, and not a secret.
PASSPHRASE = "dev-passphrase-not-secret"  # noqa: S105
READY = re.compile(rb"keymint-signer ready id=(\d+) port=(\d+)")


@dataclass
class SignerProcess:
    identifier: int
    env: dict[str, str]
    module: str = "signer.cli"  # `python -m` this; anything else is started with no arguments
    process: subprocess.Popen[bytes] | None = None
    port: int = 0
    log: Path = field(default_factory=Path)
    cwd: Path | None = None  # where it runs (`python -m` puts it first on the module path)

    def start(self, timeout: float = 30.0) -> None:
        listen = f"127.0.0.1:{self.port}"  # keep the port across restarts
        env = {**self.env, "KEYMINT_SIGNER_LISTEN": listen}
        out = self.log.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                self.module,
                *(["serve"] if self.module == "signer.cli" else []),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=out,
            cwd=self.cwd,
        )
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"signer {self.identifier} exited: see {self.log}")
            match = READY.search(line)
            if match:
                self.port = int(match.group(2))
                return
        raise RuntimeError(f"signer {self.identifier} did not start within {timeout}s")

    def _arguments(self) -> list[str]:
        return ["serve"] if self.module == "signer.cli" else []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def kill(self) -> None:
        """A crash, not a shutdown: SIGKILL."""
        kill_process(self.process)

    def hang(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        stop_process(self.process)


class SignerCluster:
    """n signer processes holding dealer shares of one t-of-n key."""

    def __init__(
        self,
        directory: Path,
        t: int,
        n: int,
        *,
        dealer: bool = True,
        spare: int = 0,
        evidence_checker: str = "extauthz.guard_checker:from_env",
    ) -> None:
        """n signers holding dealer shares (or no key when `dealer` is False, awaiting a DKG),
        plus `spare` keyless ones with certificates, for resharing onto. `evidence_checker`
        (KEYMINT_EVIDENCE_CHECKER) is what their guards verify callers' evidence with.

        `coordinator_tls` signs (what the gateway holds); `operator_tls` drives ceremonies, the
        only identity in every signer's KEYMINT_OPERATOR_IDS. The dealer shares are written to
        the signers' state directories here, not dealt by a ceremony: the signers run as in
        production, trusted dealer off."""
        self.directory = directory
        self.threshold = t  # the deployment's t, for a coordinator of these signers
        self.size = n
        self.shares: list[KeyShare] = []
        self.package: PublicKeyPackage | None = None
        if dealer:
            self.shares, self.package, _ = trusted_dealer_keygen(t, n)
        self.pki = make_dev_pki(directory / "pki", list(range(1, n + spare + 1)))
        self.coordinator_tls: TlsFiles = tls_files(directory / "pki", "coordinator")
        self.operator_tls: TlsFiles = tls_files(directory / "pki", operator_name())
        self.evidence_checker = evidence_checker
        shares = {s.identifier: s for s in self.shares}
        self.signers = {i: self._prepare(i, shares.get(i)) for i in range(1, n + spare + 1)}

    def _prepare(self, identifier: int, share: KeyShare | None) -> SignerProcess:
        state = self.directory / f"signer-{identifier}"
        state.mkdir(parents=True)
        if share is not None and self.package is not None:
            vault = SealedFileVault(PASSPHRASE, label=f"signer-{identifier}")
            store_share(vault, encode_key_share(share), state / "share.sealed")
            (state / "share.sealed.pub").write_bytes(encode_public_key_package(self.package))
        env = {
            **os.environ,
            "KEYMINT_SIGNER_ID": str(identifier),
            "KEYMINT_SIGNER_STATE_DIR": str(state),
            "KEYMINT_TLS_DIR": str(self.directory / "pki"),
            "KEYMINT_ISSUER": ISSUER,
            "KEYMINT_EVIDENCE_CHECKER": self.evidence_checker,
            "KEYMINT_OPERATOR_IDS": spiffe_id(operator_name()),
            "KEYMINT_VAULT": "sealed-file",
            "KEYMINT_VAULT_LABEL": f"signer-{identifier}",
            "KEYMINT_VAULT_PASSPHRASE": PASSPHRASE,
            # The deployment's t, as the gateway reads it: the least threshold these signers
            # let a ceremony make or a key sign with. FROST_N beside it, so the evidence
            # checker (which reads the gateway's settings) accepts any t up to n.
            "FROST_N": str(self.size),
            "FROST_T": str(self.threshold),
        }
        return SignerProcess(identifier, env, log=state / "stderr.log")

    def seal_key(self, identifier: int, share: KeyShare, package: PublicKeyPackage) -> None:
        """Put one more key at rest in a signer's key directory (before it starts)."""
        from signer.keyfiles import KeyFiles

        state = self.directory / f"signer-{identifier}"
        vault = SealedFileVault(PASSPHRASE, label=f"signer-{identifier}")
        files = KeyFiles(
            vault, state / "keys", identifier=identifier, legacy_share=state / "share.sealed"
        )
        files.load()
        files.persist(share, package)

    def start(self) -> None:
        for process in self.signers.values():
            process.start()

    def stop(self) -> None:
        for process in self.signers.values():
            process.stop()

    def endpoints(self, ids: Iterable[int] | None = None) -> list[SignerEndpoint]:
        chosen = set(self.signers) if ids is None else set(ids)
        return [
            SignerEndpoint(i, p.address) for i, p in sorted(self.signers.items()) if i in chosen
        ]

    def addresses(self, ids: Iterable[int]) -> dict[int, str]:
        return {i: self.signers[i].address for i in ids}

    def state_dir(self, identifier: int) -> Path:
        return Path(self.signers[identifier].env["KEYMINT_SIGNER_STATE_DIR"])
