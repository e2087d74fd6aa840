"""A signer's keys: added beside each other, a held key's share replaced by a reshare, the others
dropped only by replace_existing; each persisted (sealed) on its own and loaded back in order."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from signer.errors import SignerError
from signer.frost import KeyShare, PublicKeyPackage, trusted_dealer_keygen
from signer.frost.encoding import encode_key_share, encode_public_key_package
from signer.keyfiles import KeyFileError, KeyFiles
from signer.keystate import KeyState, NoKey, SigningKey, header_kid
from signer.token import header_for, kid_for, signing_input
from signer.vault.config import store_share
from signer.vault.sealed_file import SealedFileVault

VAULT = SealedFileVault("keystate-test-passphrase", label="signer-2")


def dealt(identifier: int = 2, secret: int | None = None) -> tuple[KeyShare, PublicKeyPackage]:
    shares, package, _ = trusted_dealer_keygen(2, 3, secret_key=secret)
    return shares[identifier - 1], package


def files(directory: Path, *, legacy: Path | None = None) -> KeyFiles:
    return KeyFiles(VAULT, directory / "keys", identifier=2, legacy_share=legacy)


def state_from(keyfiles: KeyFiles) -> KeyState:
    return KeyState(keyfiles.load(), persist=keyfiles.persist, discard=keyfiles.discard)


def test_a_new_group_key_is_added_beside_the_held_ones() -> None:
    state = KeyState()
    with pytest.raises(NoKey):
        _ = state.current
    first, second = dealt(), dealt()
    a = state.install(*first)
    b = state.install(*second)
    assert state.kids == (a.kid, b.kid)
    assert state.current == b  # the newest
    assert state.get(a.kid) == a
    assert state.identifier == 2


def test_a_reshare_of_a_held_key_replaces_only_its_share() -> None:
    secret = 12345
    old_share, old_package = dealt(secret=secret)
    new_share, new_package = dealt(secret=secret)  # same group key, new sharing
    other = dealt()
    state = KeyState()
    state.install(old_share, old_package)
    kept = state.install(*other)
    replaced = state.install(new_share, new_package)
    assert replaced.kid == kid_for(old_package.group_public_key)
    assert state.kids == (replaced.kid, kept.kid)  # it keeps its place
    assert state.get(replaced.kid) == SigningKey(new_share, new_package)
    assert state.current == kept


def test_replace_existing_drops_every_other_key() -> None:
    state = KeyState()
    state.install(*dealt())
    state.install(*dealt())
    only = state.install(*dealt(), replace_existing=True)
    assert state.kids == (only.kid,)


def test_a_share_that_does_not_match_its_package_or_identifier_is_refused() -> None:
    share, _ = dealt()
    _, other_package = dealt()
    state = KeyState()
    with pytest.raises(SignerError, match="does not match"):
        state.install(share, other_package)
    state.install(*dealt())
    with pytest.raises(SignerError, match="participant 3"):
        state.install(*dealt(identifier=3))


def test_keys_are_persisted_one_by_one_and_loaded_back_in_order(tmp_path: Path) -> None:
    state = state_from(files(tmp_path))
    a = state.install(*dealt(secret=777))
    b = state.install(*dealt())
    c = state.install(*dealt(secret=777))  # a refresh of `a`: same file, same place
    assert c.kid == a.kid
    sealed = sorted(p.name for p in (tmp_path / "keys").iterdir())
    assert sealed == [
        f"0000.{a.kid}.sealed",
        f"0000.{a.kid}.sealed.pub",
        f"0001.{b.kid}.sealed",
        f"0001.{b.kid}.sealed.pub",
    ]
    assert os.stat(tmp_path / "keys" / f"0000.{a.kid}.sealed").st_mode & 0o077 == 0
    reloaded = state_from(files(tmp_path))
    assert reloaded.keys == (c, b)


def test_dropping_a_key_deletes_its_files(tmp_path: Path) -> None:
    state = state_from(files(tmp_path))
    state.install(*dealt())
    state.install(*dealt())
    only = state.install(*dealt(), replace_existing=True)
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == [
        f"0002.{only.kid}.sealed",
        f"0002.{only.kid}.sealed.pub",
    ]
    assert state_from(files(tmp_path)).kids == (only.kid,)


def test_the_legacy_share_file_is_read_and_replaced_when_its_key_changes(tmp_path: Path) -> None:
    share, package = dealt(secret=4242)
    legacy = tmp_path / "share.sealed"
    store_share(VAULT, encode_key_share(share), legacy)
    legacy.with_name("share.sealed.pub").write_bytes(encode_public_key_package(package))
    state = state_from(files(tmp_path, legacy=legacy))
    assert state.kids == (kid_for(package.group_public_key),)
    added = state.install(*dealt())
    refreshed = state.install(*dealt(secret=4242))
    assert not legacy.exists()
    assert not legacy.with_name("share.sealed.pub").exists()
    assert state_from(files(tmp_path, legacy=legacy)).keys == (refreshed, added)


def test_a_key_file_under_another_kid_is_refused(tmp_path: Path) -> None:
    state = state_from(files(tmp_path))
    a = state.install(*dealt())
    b = state.install(*dealt())
    keys = tmp_path / "keys"
    (keys / f"0000.{a.kid}.sealed").replace(keys / f"0000.{b.kid}.sealed")
    (keys / f"0000.{a.kid}.sealed.pub").replace(keys / f"0000.{b.kid}.sealed.pub")
    with pytest.raises(KeyFileError, match=f"holds a share of key {a.kid}, not {b.kid}"):
        files(tmp_path).load()


def test_a_key_for_another_participant_is_refused_at_load(tmp_path: Path) -> None:
    keyfiles = KeyFiles(VAULT, tmp_path / "keys", identifier=3)
    keyfiles.load()
    keyfiles.persist(*dealt())  # participant 2's share in signer 3's directory
    with pytest.raises(KeyFileError, match="participant 2, this signer is 3"):
        KeyFiles(VAULT, tmp_path / "keys", identifier=3).load()


def test_messages_select_a_key_by_their_header_kid() -> None:
    state = KeyState()
    a = state.install(*dealt())
    state.install(*dealt())
    message = signing_input(header_for(a.package.group_public_key), {"sub": "x"})
    assert header_kid(message) == a.kid
    assert state.for_message(message) == a
    _, unheld = dealt()
    assert state.for_message(signing_input(header_for(unheld.group_public_key), {})) is None
    for garbage in (b"", b"no-dot", b"!!!.e30", b"e30.e30", b"WzFd.e30"):
        assert header_kid(garbage) is None
