"""The refresh token's only home: an OS keyring, or nowhere. keyring's `fail` and `null` backends
and the file backends of `keyrings.alt` are not one."""

from __future__ import annotations

import keyring
import pytest
from keyring.backends import chainer, fail, null

from extauthz.tools.login.store import KeyringStore, account_for, is_os_keyring, system_store
from tests.helpers.keyring_backend import MemoryKeyring


class PlaintextKeyring(MemoryKeyring):
    """Where keyrings.alt's plain-text file backend lives."""


PlaintextKeyring.__module__ = "keyrings.alt.file"


class BrokenKeyring(MemoryKeyring):
    def get_password(self, service: str, username: str) -> str | None:
        raise RuntimeError("the Secret Service is locked")

    def set_password(self, service: str, username: str, password: str) -> None:
        raise RuntimeError("the Secret Service is locked")


@pytest.mark.parametrize(
    ("backend", "os_keyring"),
    [
        (fail.Keyring(), False),
        (null.Keyring(), False),
        (PlaintextKeyring(), False),
        (MemoryKeyring(), True),
    ],
)
def test_which_backends_are_an_os_keyring(backend: object, os_keyring: bool) -> None:
    assert is_os_keyring(backend) is os_keyring  # type: ignore[arg-type]


def test_a_chain_is_an_os_keyring_only_if_every_link_is(monkeypatch: pytest.MonkeyPatch) -> None:
    chain = chainer.ChainerBackend()
    monkeypatch.setattr(chainer.ChainerBackend, "backends", [MemoryKeyring()])
    assert is_os_keyring(chain)
    monkeypatch.setattr(chainer.ChainerBackend, "backends", [MemoryKeyring(), PlaintextKeyring()])
    assert not is_os_keyring(chain)
    monkeypatch.setattr(chainer.ChainerBackend, "backends", [])
    assert not is_os_keyring(chain)


def test_no_store_without_an_os_keyring(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keyring, "get_keyring", fail.Keyring)
    assert system_store("x") is None
    monkeypatch.setattr(keyring, "get_keyring", PlaintextKeyring)
    assert system_store("x") is None
    monkeypatch.setattr(keyring, "get_keyring", MemoryKeyring)
    store = system_store("x")
    assert store is not None
    assert store.backend_name == "tests.helpers.keyring_backend.MemoryKeyring"


def test_a_store_keeps_one_token_per_idp_and_client() -> None:
    backend = MemoryKeyring()
    ada = KeyringStore(account_for("https://idp.example", "keymint-cli"), backend)
    other = KeyringStore(account_for("https://idp.example", "other-cli"), backend)
    assert ada.load() is None
    ada.save("refresh-1")
    assert (ada.load(), other.load()) == ("refresh-1", None)
    ada.delete()
    ada.delete()  # deleting nothing is not an error
    assert ada.load() is None


def test_a_failing_keyring_means_signing_in_again(caplog: pytest.LogCaptureFixture) -> None:
    store = KeyringStore("x", BrokenKeyring())
    assert store.load() is None
    store.save("refresh-1")  # logged, not raised: the login still succeeds
    assert "RuntimeError" in caplog.text
    assert "refresh-1" not in caplog.text
