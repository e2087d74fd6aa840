"""Where a signer's keys rest: one sealed share and one public key package per kid.

    <state>/keys/<seq>.<kid>.sealed       the share, sealed by the vault (owner-only file)
    <state>/keys/<seq>.<kid>.sealed.pub   its public key package (public)

`seq` keeps the order keys were first installed in; a reshare or refresh of a held key rewrites its
files under the same `seq`. The single-key files of earlier versions (`share.sealed` and
`share.sealed.pub`, KEYMINT_SHARE_FILE) are still read, as the oldest key, and are replaced by the
layout above the first time that key changes or is dropped.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from signer.errors import SignerError
from signer.files import write_atomically
from signer.frost import EncodingError, KeyShare, PublicKeyPackage
from signer.frost.encoding import (
    decode_key_share,
    decode_public_key_package,
    encode_key_share,
    encode_public_key_package,
)
from signer.keystate import SigningKey
from signer.vault.base import ShareVault
from signer.vault.config import load_share, store_share

log = logging.getLogger(__name__)

_NAME = re.compile(r"(\d{4,})\.([A-Za-z0-9_-]{43})\.sealed")


class KeyFileError(SignerError):
    """A key file that cannot be used; `path` names it."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        super().__init__(f"{path}: {problem}")


class KeyFiles:
    """The key directory of one signer; `persist` and `discard` are KeyState's hooks."""

    def __init__(
        self,
        vault: ShareVault,
        directory: Path,
        *,
        identifier: int,
        legacy_share: Path | None = None,
    ) -> None:
        self._vault = vault
        self._directory = directory
        self._identifier = identifier
        self._legacy = legacy_share
        self._legacy_kid: str | None = None
        self._seq: dict[str, int] = {}

    def load(self) -> list[SigningKey]:
        """Unseal every key at rest, oldest first."""
        keys: dict[str, SigningKey] = {}
        if self._legacy is not None and self._legacy.exists():
            key = self._unseal(self._legacy)
            keys[key.kid] = key
            self._legacy_kid = key.kid
            self._seq[key.kid] = 0
        found = []
        if self._directory.is_dir():
            for path in self._directory.iterdir():
                match = _NAME.fullmatch(path.name)
                if match is not None:
                    found.append((int(match.group(1)), match.group(2), path))
        for seq, kid, path in sorted(found):
            key = self._unseal(path)
            if key.kid != kid:
                raise KeyFileError(path, f"holds a share of key {key.kid}, not {kid}")
            if kid in keys and kid != self._legacy_kid:
                raise KeyFileError(path, f"a second file for key {kid}")
            keys.pop(kid, None)  # the new layout wins over a legacy file for the same key
            keys[kid] = key
            self._seq[kid] = seq
        return list(keys.values())

    def persist(self, share: KeyShare, package: PublicKeyPackage) -> None:
        kid = SigningKey(share, package).kid
        seq = self._seq.get(kid)
        if seq is None:
            seq = max(self._seq.values(), default=-1) + 1
        self._directory.mkdir(parents=True, exist_ok=True)
        sealed = self._path(seq, kid)
        write_atomically(_package_path(sealed), encode_public_key_package(package))
        store_share(self._vault, encode_key_share(share), sealed)
        self._seq[kid] = seq
        if kid == self._legacy_kid:
            self._drop_legacy()

    def discard(self, kid: str) -> None:
        """Delete a dropped key's files (a deleted sealed blob is all this process can erase)."""
        seq = self._seq.pop(kid, None)
        if seq is not None:
            sealed = self._path(seq, kid)
            sealed.unlink(missing_ok=True)
            _package_path(sealed).unlink(missing_ok=True)
        if kid == self._legacy_kid:
            self._drop_legacy()
        log.warning("key %s dropped: its sealed share is deleted", kid)

    def _drop_legacy(self) -> None:
        assert self._legacy is not None, "a legacy kid comes from a legacy file"
        self._legacy.unlink(missing_ok=True)
        _package_path(self._legacy).unlink(missing_ok=True)
        self._legacy_kid = None

    def _path(self, seq: int, kid: str) -> Path:
        return self._directory / f"{seq:04d}.{kid}.sealed"

    def _unseal(self, sealed: Path) -> SigningKey:
        try:
            share = decode_key_share(load_share(self._vault, sealed))
            package = decode_public_key_package(_package_path(sealed).read_bytes())
        except EncodingError as exc:
            raise KeyFileError(sealed, f"unreadable key: {exc}") from None
        except FileNotFoundError:
            raise KeyFileError(sealed, "its public key package (.pub) is missing") from None
        if share.identifier != self._identifier:
            raise KeyFileError(
                sealed,
                f"the share is for participant {share.identifier}, this signer is "
                f"{self._identifier} (KEYMINT_SIGNER_ID)",
            )
        if package.verifying_shares.get(share.identifier) != share.verifying_share:
            raise KeyFileError(sealed, "the share does not match its public key package")
        return SigningKey(share, package)


def _package_path(sealed: Path) -> Path:
    return sealed.with_name(sealed.name + ".pub")
