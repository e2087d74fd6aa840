"""Vault configuration from the environment, `open_vault`, and the sealed-share file helpers."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from signer.vault.base import VaultConfigError, VaultUnavailable, WrongSecret
from signer.vault.config import (
    Pkcs11Config,
    SealedFileConfig,
    VaultConfig,
    YubiKeyConfig,
    load_share,
    open_vault,
    parse_vault_config,
    store_share,
)
from signer.vault.pkcs11 import Pkcs11Vault, ensure_key
from signer.vault.sealed_file import SealedFileVault
from signer.vault.yubikey import YubiKeyVault
from tests.signer.vault.conftest import KEY_LABEL, SoftHsmToken

PASSPHRASE = "development passphrase"


def test_sealed_file_config() -> None:
    config = parse_vault_config({"KEYMINT_VAULT": "sealed-file", "KEYMINT_VAULT_LABEL": "signer-1"})
    assert config == SealedFileConfig(label="signer-1")


def test_pkcs11_config_with_default_key_label() -> None:
    config = parse_vault_config(
        {
            "KEYMINT_VAULT": "pkcs11",
            "KEYMINT_PKCS11_MODULE": "/usr/lib/softhsm/libsofthsm2.so",
            "KEYMINT_PKCS11_TOKEN_LABEL": "signer-token",
        }
    )
    assert config == Pkcs11Config(
        module="/usr/lib/softhsm/libsofthsm2.so",
        token_label="signer-token",
        key_label="keymint-share-wrap",
    )


@pytest.mark.parametrize(
    ("slot", "serial", "expected"),
    [
        (None, None, YubiKeyConfig(slot=0x9D, serial=None)),
        ("9a", "12345678", YubiKeyConfig(slot=0x9A, serial=12345678)),
        ("0x82", " 7 ", YubiKeyConfig(slot=0x82, serial=7)),
        ("95", "", YubiKeyConfig(slot=0x95)),
    ],
)
def test_yubikey_config(slot: str | None, serial: str | None, expected: VaultConfig) -> None:
    env = {"KEYMINT_VAULT": "yubikey"}
    if slot is not None:
        env["KEYMINT_YUBIKEY_SLOT"] = slot
    if serial is not None:
        env["KEYMINT_YUBIKEY_SERIAL"] = serial
    assert parse_vault_config(env) == expected


@pytest.mark.parametrize(
    ("env", "variable", "message"),
    [
        ({}, "KEYMINT_VAULT", "is not set"),
        ({"KEYMINT_VAULT": "vault"}, "KEYMINT_VAULT", "unknown vault 'vault'"),
        (
            {"KEYMINT_VAULT": "pkcs11", "KEYMINT_PKCS11_TOKEN_LABEL": "t"},
            "KEYMINT_PKCS11_MODULE",
            "is not set",
        ),
        (
            {"KEYMINT_VAULT": "pkcs11", "KEYMINT_PKCS11_MODULE": "/m.so"},
            "KEYMINT_PKCS11_TOKEN_LABEL",
            "is not set",
        ),
        (
            {"KEYMINT_VAULT": "yubikey", "KEYMINT_YUBIKEY_SLOT": "zz"},
            "KEYMINT_YUBIKEY_SLOT",
            "expected a PIV slot in hex such as 9d, got 'zz'",
        ),
        (
            {"KEYMINT_VAULT": "yubikey", "KEYMINT_YUBIKEY_SLOT": "f9"},
            "KEYMINT_YUBIKEY_SLOT",
            "'f9' is not a PIV key slot",
        ),
        (
            {"KEYMINT_VAULT": "yubikey", "KEYMINT_YUBIKEY_SERIAL": "abc"},
            "KEYMINT_YUBIKEY_SERIAL",
            "expected a decimal serial number",
        ),
        (
            {"KEYMINT_VAULT": "yubikey", "KEYMINT_YUBIKEY_SERIAL": "-3"},
            "KEYMINT_YUBIKEY_SERIAL",
            "expected a positive serial",
        ),
        (
            {"KEYMINT_VAULT": "sealed-file", "KEYMINT_VAULT_LABEL": "x" * 256},
            "KEYMINT_VAULT_LABEL",
            "at most 255 bytes",
        ),
    ],
)
def test_bad_settings_name_their_variable(env: dict[str, str], variable: str, message: str) -> None:
    with pytest.raises(VaultConfigError) as caught:
        parse_vault_config(env)
    assert caught.value.setting == variable
    assert str(caught.value).startswith(f"{variable}: ")
    assert message in str(caught.value)


def test_config_is_frozen() -> None:
    config = SealedFileConfig(label="a")
    with pytest.raises(AttributeError):
        config.label = "b"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("config", "variable"),
    [
        (SealedFileConfig(), "KEYMINT_VAULT_PASSPHRASE"),
        (Pkcs11Config(module="/m.so", token_label="t"), "KEYMINT_PKCS11_PIN"),
        (YubiKeyConfig(), "KEYMINT_YUBIKEY_PIN"),
    ],
)
def test_open_vault_names_the_missing_secret(config: VaultConfig, variable: str) -> None:
    with pytest.raises(VaultConfigError, match=f"^{variable}: is not set"):
        open_vault(config, env={})


def test_open_vault_builds_each_kind() -> None:
    env = {
        "KEYMINT_VAULT_PASSPHRASE": PASSPHRASE,
        "KEYMINT_PKCS11_PIN": "1234",
        "KEYMINT_YUBIKEY_PIN": "123456",
    }
    sealed = open_vault(SealedFileConfig(label="s"), env=env)
    assert isinstance(sealed, SealedFileVault)
    assert sealed.label == "s"
    pkcs11 = open_vault(Pkcs11Config(module="/m.so", token_label="t", key_label="k"), env=env)
    assert isinstance(pkcs11, Pkcs11Vault)
    assert pkcs11.description == "PKCS#11 AES key 'k' on token 't' (module /m.so)"
    yubikey = open_vault(YubiKeyConfig(slot=0x82, serial=42), env=env)
    assert isinstance(yubikey, YubiKeyVault)
    assert yubikey.description == "YubiKey PIV slot 82 (YubiKey serial 42)"


def test_sealed_file_from_the_environment_round_trips(tmp_path: Path, share: bytes) -> None:
    env = {
        "KEYMINT_VAULT": "sealed-file",
        "KEYMINT_VAULT_LABEL": "signer-1",
        "KEYMINT_VAULT_PASSPHRASE": PASSPHRASE,
    }
    path = tmp_path / "share.sealed"
    store_share(open_vault(parse_vault_config(env), env=env), share, path)
    assert load_share(open_vault(parse_vault_config(env), env=env), path) == share


def test_pkcs11_from_the_environment_round_trips(
    softhsm_token: SoftHsmToken, tmp_path: Path, share: bytes
) -> None:
    env = {
        "KEYMINT_VAULT": "pkcs11",
        "KEYMINT_PKCS11_MODULE": softhsm_token.module,
        "KEYMINT_PKCS11_TOKEN_LABEL": softhsm_token.token_label,
        "KEYMINT_PKCS11_KEY_LABEL": KEY_LABEL,
        "KEYMINT_PKCS11_PIN": softhsm_token.pin,
    }
    ensure_key(
        module=softhsm_token.module,
        token_label=softhsm_token.token_label,
        key_label=KEY_LABEL,
        pin=softhsm_token.pin,
    )
    path = tmp_path / "share.sealed"
    store_share(open_vault(parse_vault_config(env), env=env), share, path)
    assert load_share(open_vault(parse_vault_config(env), env=env), path) == share


def test_store_share_writes_owner_only_and_leaves_no_temporary_file(
    tmp_path: Path, share: bytes
) -> None:
    vault = SealedFileVault(PASSPHRASE)
    path = tmp_path / "share.sealed"
    store_share(vault, share, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["share.sealed"]


def test_store_share_replaces_an_existing_blob(tmp_path: Path, share: bytes) -> None:
    vault = SealedFileVault(PASSPHRASE)
    path = tmp_path / "share.sealed"
    store_share(vault, b"old share", path)
    store_share(vault, share, path)
    assert load_share(vault, path) == share
    assert os.listdir(tmp_path) == ["share.sealed"]


def test_store_share_cleans_up_when_sealing_fails(tmp_path: Path) -> None:
    with pytest.raises(VaultUnavailable):
        store_share(
            Pkcs11Vault(module="/nonexistent.so", token_label="t", key_label="k", pin="1234"),
            b"share",
            tmp_path / "share.sealed",
        )
    assert os.listdir(tmp_path) == []


def test_store_share_cleans_up_when_writing_fails(
    tmp_path: Path, share: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(source: object, target: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="No space left"):
        store_share(SealedFileVault(PASSPHRASE), share, tmp_path / "share.sealed")
    assert os.listdir(tmp_path) == []


def test_load_share_of_a_missing_file_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(VaultUnavailable, match=r"no sealed share at .*missing\.sealed"):
        load_share(SealedFileVault(PASSPHRASE), tmp_path / "missing.sealed")


def test_load_share_warns_about_a_readable_blob(
    tmp_path: Path, share: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    vault = SealedFileVault(PASSPHRASE)
    path = tmp_path / "share.sealed"
    store_share(vault, share, path)
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="signer.vault.config"):
        assert load_share(vault, path) == share
    assert "is readable by others (mode 644)" in caplog.text


def test_nothing_secret_is_logged_or_raised(
    tmp_path: Path,
    share: bytes,
    caplog: pytest.LogCaptureFixture,
    assert_no_secrets: Callable[..., None],
) -> None:
    path = tmp_path / "share.sealed"
    with caplog.at_level(logging.DEBUG):
        store_share(SealedFileVault(PASSPHRASE), share, path)
        with pytest.raises(WrongSecret) as caught:
            load_share(SealedFileVault("another passphrase"), path)
    assert_no_secrets(caught.value, share, PASSPHRASE, "another passphrase")
    for secret in (share.hex(), PASSPHRASE, "another passphrase"):
        assert secret not in caplog.text
