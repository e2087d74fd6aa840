"""Keyring backends standing in for the OS keyring in tests (this machine has none: `keyring`
falls back to its `fail` backend, which `extauthz login` refuses to use).

- `MemoryKeyring`: in process.
- `FileKeyring`: for a `extauthz login` subprocess, chosen with PYTHON_KEYRING_BACKEND (keyring's
  own switch) =tests.helpers.keyring_backend.FileKeyring; it keeps its entries in the JSON file
  $KEYMINT_TEST_KEYRING, so that the test can look at what the command stored, and a second
  run finds it. It stands for the OS keyring only; nothing else in the tests writes that file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from keyring.backend import KeyringBackend
from keyring.errors import PasswordDeleteError


class MemoryKeyring(KeyringBackend):
    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.entries: dict[str, str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self._load().get(f"{service}/{username}")

    def set_password(self, service: str, username: str, password: str) -> None:
        entries = self._load()
        entries[f"{service}/{username}"] = password
        self._dump(entries)

    def delete_password(self, service: str, username: str) -> None:
        entries = self._load()
        if entries.pop(f"{service}/{username}", None) is None:
            raise PasswordDeleteError("no such entry")
        self._dump(entries)

    def _load(self) -> dict[str, str]:
        return self.entries

    def _dump(self, entries: dict[str, str]) -> None:
        self.entries = entries


class FileKeyring(MemoryKeyring):
    def _path(self) -> Path:
        return Path(os.environ["KEYMINT_TEST_KEYRING"])

    def _load(self) -> dict[str, str]:
        path = self._path()
        entries: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
        return entries

    def _dump(self, entries: dict[str, str]) -> None:
        self._path().write_text(json.dumps(entries))
