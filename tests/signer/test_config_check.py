"""`signer check-config` and FROST_T, which the signer and its evidence checker both read."""

from __future__ import annotations

from pathlib import Path

import pytest

from signer.config_check import load
from signer.server import SignerSettingsError
from tests.extauthz.misconfigurations import base_env


def test_frost_t_is_the_signers_minimum_threshold_and_no_unknown_setting(tmp_path: Path) -> None:
    settings, _ = load(base_env("signer", tmp_path) | {"FROST_T": "3"})
    assert settings.min_threshold == 3
    # In a config file shared with the gateway, too: a known setting, read once.
    config = tmp_path / "keymint.toml"
    config.write_text("FROST_T = 3\n")
    env = base_env("signer", tmp_path)
    env.pop("FROST_T", None)
    settings, _ = load(env, config_file=config)
    assert settings.min_threshold == 3


def test_a_frost_t_of_one_is_named_once(tmp_path: Path) -> None:
    with pytest.raises(SignerSettingsError) as refused:
        load(base_env("signer", tmp_path) | {"FROST_T": "1"})
    assert [p.line() for p in refused.value.problems if p.setting == "FROST_T"] == [
        "FROST_T: 1 is below 2, FROST's minimum threshold (for example FROST_T=2)"
    ]
