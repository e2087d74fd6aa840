"""Every misconfiguration tried (tests/extauthz/misconfigurations.py), one test each, and the table
of them in docs/operations.md, generated from the same data; then the commands as operators run
them: `extauthz check-config` and `signer check-config` report every problem at once, one line each,
exit 2 and never print a traceback; `serve` stops the same way before it contacts anything; a
config file (TOML or YAML) is read under the environment."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from extauthz.check_config import load
from extauthz.config import GATEWAY_SCHEMA, SettingsError
from signer.server import SIGNER_SCHEMA
from tests.conftest import REPO
from tests.extauthz.configs import without_keymint
from tests.extauthz.misconfigurations import (
    CASES,
    TABLE_END,
    TABLE_START,
    Case,
    base_env,
    problems_of,
    table,
)

OPERATIONS = REPO / "docs" / "operations.md"


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.ident)
def test_each_misconfiguration_is_named_with_what_is_wrong_and_a_right_value(
    case: Case, tmp_path: Path
) -> None:
    problems = problems_of(case, tmp_path)
    named = [p for p in problems if p.setting == case.setting]
    assert named, f"{case.ident}: {[p.line() for p in problems]}"
    assert case.says in named[0].problem
    declared = {**GATEWAY_SCHEMA, **SIGNER_SCHEMA}.get(case.setting)
    if declared is not None:  # a setting keymint knows comes with an example of a right value
        assert named[0].line().endswith(f"(for example {case.setting}={declared.example})")


def test_there_are_at_least_25_and_both_processes_are_tried() -> None:
    assert len(CASES) >= 25
    assert {case.process for case in CASES} == {"gateway", "signer"}
    assert len({case.ident for case in CASES}) == len(CASES)


@pytest.mark.parametrize("process", ["gateway", "signer"])
def test_the_configuration_each_case_breaks_is_accepted_whole(process: str, tmp_path: Path) -> None:
    """The positive control: without the case's change, no problem at all."""
    case = Case("none", process, "nothing", "", "")
    assert problems_of(case, tmp_path) == ()


def test_the_table_in_docs_operations_is_the_cases() -> None:
    text = OPERATIONS.read_text()
    assert TABLE_START in text, "docs/operations.md lacks the table"
    shown = text[text.index(TABLE_START) : text.index(TABLE_END) + len(TABLE_END)]
    assert shown == table(), "regenerate it: python -m tests.extauthz.misconfigurations"


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    env = base_env("gateway", tmp_path)
    env |= {
        "FROST_T": "1",
        "KEYMINT_RATE_BURST": "many",
        "KEYMINT_LOG_FORMAT": "xml",
        "KEYMINT_ADMIN_TOKEN_SHA256": "nope",
    }
    del env["KEYMINT_ISSUER"]
    with pytest.raises(SettingsError) as refused:
        load(env)
    settings = [problem.setting for problem in refused.value.problems]
    assert settings == [
        "FROST_T",
        "KEYMINT_ADMIN_TOKEN_SHA256",
        "KEYMINT_ISSUER",
        "KEYMINT_RATE_BURST",
        "KEYMINT_LOG_FORMAT",
    ]
    assert str(refused.value).count("\n") == 4  # one line each


def test_a_file_that_cannot_be_read_is_reported_beside_a_malformed_value(tmp_path: Path) -> None:
    env = base_env("gateway", tmp_path) | {
        "FROST_T": "1",
        "POLICY_FILE": str(tmp_path / "absent-policy.json"),
    }
    with pytest.raises(SettingsError) as refused:
        load(env)
    lines = [problem.line() for problem in refused.value.problems]
    assert lines[0].startswith("FROST_T: 1 must be between 2 and FROST_N")
    absent = tmp_path / "absent-policy.json"
    assert lines[1].startswith(f"POLICY_FILE: {absent} cannot be read: No such file")
    assert len(lines) == 2


def test_no_audience_is_one_line_naming_the_audiences(tmp_path: Path) -> None:
    env = base_env("gateway", tmp_path) | {"KEYMINT_OIDC_AUDIENCES": ""}
    with pytest.raises(SettingsError) as refused:
        load(env)
    assert [problem.setting for problem in refused.value.problems] == ["KEYMINT_OIDC_AUDIENCES"]


# --- the commands, as processes ----------------------------------------------------------------


def run(*argv: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *argv],
        env={**without_keymint(), **env, "PYTHONPATH": str(REPO)},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_check_config_says_ok_for_a_right_configuration(tmp_path: Path) -> None:
    done = run("extauthz.cli", "check-config", env=base_env("gateway", tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("configuration OK: issuer https://keymint.test, 2 of 3 signers")
    signer = run("signer.cli", "check-config", env=base_env("signer", tmp_path))
    assert signer.returncode == 0, signer.stderr
    assert signer.stdout.startswith("configuration OK: signer 1 for issuer https://keymint.test")


def test_check_config_prints_every_problem_one_line_each_and_exits_2(tmp_path: Path) -> None:
    env = base_env("gateway", tmp_path) | {"FROST_N": "three", "KEYMINT_LOG_FORMAT": "xml"}
    del env["KEYMINT_SIGNERS"]
    done = run("extauthz.cli", "check-config", env=env)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert lines[0] == "extauthz check-config: the configuration has 3 problems:"
    assert [line.split(":")[0].strip() for line in lines[1:]] == [
        "FROST_N",
        "KEYMINT_LOG_FORMAT",
        "KEYMINT_SIGNERS",
    ]
    assert "Traceback" not in done.stderr


def test_signer_check_config_prints_every_problem_and_exits_2(tmp_path: Path) -> None:
    env = base_env("signer", tmp_path) | {"KEYMINT_VAULT": "tpm", "KEYMINT_EVIDENCE_BUDGET": "0"}
    env["POLICY_FILE"] = str(tmp_path / "absent.json")
    done = run("signer.cli", "check-config", env=env)
    assert done.returncode == 2
    assert done.stderr.startswith("signer check-config: the configuration has 3 problems:")
    for setting in ("KEYMINT_VAULT:", "KEYMINT_EVIDENCE_BUDGET:", "POLICY_FILE:"):
        assert f"\n  {setting}" in done.stderr
    assert "Traceback" not in done.stderr


def test_serve_with_a_broken_policy_and_no_signers_stops_at_once_saying_both(
    tmp_path: Path,
) -> None:
    """The issue's first hour: it used to wait 5 s on the signers, then die with a traceback
    about the code and an unclosed HTTP session."""
    env = base_env("gateway", tmp_path)
    del env["KEYMINT_SIGNERS"]
    (tmp_path / "broken.json").write_text('{"version": 1,')
    env["POLICY_FILE"] = str(tmp_path / "broken.json")
    started = time.monotonic()
    done = run("extauthz.cli", "serve", env=env)
    took = time.monotonic() - started
    assert done.returncode == 2
    assert done.stdout == ""  # never announced as listening
    assert "\n  KEYMINT_SIGNERS: is required" in done.stderr
    assert "\n  POLICY_FILE: " in done.stderr
    assert "Traceback" not in done.stderr
    assert "Unclosed" not in done.stderr
    assert took < 10, took


def test_signer_serve_with_bad_settings_stops_without_a_traceback(tmp_path: Path) -> None:
    env = base_env("signer", tmp_path) | {"KEYMINT_SIGNER_ID": "zero"}
    done = run("signer.cli", "serve", env=env)
    assert done.returncode == 2
    assert done.stderr.startswith("signer serve: KEYMINT_SIGNER_ID: 'zero' is not an integer")
    assert "Traceback" not in done.stderr


# --- the config file ---------------------------------------------------------------------------

TOML = """\
KEYMINT_ISSUER = "https://keymint.test"
FROST_N = 3
FROST_T = 2
ALLOWED_SCOPES = ["deploy:read", "deploy:write", "orders:read"]
KEYMINT_RATE_PER_SECOND = 20.5
KEYMINT_OIDC_ALLOW_HTTP = false
"""

YAML = """\
KEYMINT_ISSUER: https://keymint.test
FROST_N: 3
ALLOWED_SCOPES: [deploy:read, deploy:write, orders:read]
KEYMINT_RATE_PER_SECOND: 20.5
KEYMINT_SIGNERS: {1: "127.0.0.1:1", 2: "127.0.0.1:1", 3: "127.0.0.1:1"}
"""


@pytest.mark.parametrize(("name", "content"), [("gateway.toml", TOML), ("gateway.yaml", YAML)])
def test_a_config_file_in_toml_or_yaml_is_read_typed(
    tmp_path: Path, name: str, content: str
) -> None:
    env = base_env("gateway", tmp_path)
    for moved in ("KEYMINT_ISSUER", "ALLOWED_SCOPES", "KEYMINT_SIGNERS"):
        del env[moved]
    if name.endswith(".toml"):
        env["KEYMINT_SIGNERS"] = "1=127.0.0.1:1,2=127.0.0.1:1,3=127.0.0.1:1"
    (tmp_path / name).write_text(content)
    settings, _ = load(env, config_file=tmp_path / name)
    assert settings.issuer == "https://keymint.test"
    assert settings.allowed_scopes == {"deploy:read", "deploy:write", "orders:read"}
    assert settings.rate_per_second == 20.5
    assert [s.identifier for s in settings.signers] == [1, 2, 3]


def test_the_environment_overrides_the_file_and_an_empty_variable_does_not(
    tmp_path: Path,
) -> None:
    (tmp_path / "gateway.toml").write_text(
        "KEYMINT_RATE_BURST = 7\nTOKEN_DEFAULT_TTL_SECONDS = 600\n"
    )
    env = base_env("gateway", tmp_path) | {
        "KEYMINT_CONFIG_FILE": str(tmp_path / "gateway.toml"),
        "KEYMINT_RATE_BURST": "9",
        "TOKEN_DEFAULT_TTL_SECONDS": "",
    }
    settings, merged = load(env)
    assert settings.rate_burst == 9  # the environment's
    assert settings.default_ttl_seconds == 600  # the file's: an empty variable is unset
    assert merged["TOKEN_DEFAULT_TTL_SECONDS"] == "600"


def test_serve_reads_the_config_file_it_is_given(tmp_path: Path) -> None:
    env = base_env("gateway", tmp_path)
    del env["KEYMINT_ISSUER"]
    (tmp_path / "gateway.toml").write_text('KEYMINT_ISSUER = "https://keymint.test"\nFROST_T = 5\n')
    for command in ("serve", "check-config"):
        done = run("extauthz.cli", command, "--config", str(tmp_path / "gateway.toml"), env=env)
        assert done.returncode == 2
        assert done.stdout == ""  # serve never announced itself listening
        assert done.stderr == (
            f"extauthz {command}: FROST_T: 5 must be between 2 and FROST_N (3) "
            "(for example FROST_T=2)\n"
        )


def test_a_secret_of_the_wrong_type_in_a_file_is_not_echoed(tmp_path: Path) -> None:
    (tmp_path / "signer.yaml").write_text("KEYMINT_VAULT_PASSPHRASE: [hunter2]\n")
    env = base_env("signer", tmp_path) | {"KEYMINT_CONFIG_FILE": str(tmp_path / "signer.yaml")}
    del env["KEYMINT_VAULT_PASSPHRASE"]
    done = run("signer.cli", "check-config", env=env)
    assert done.returncode == 2
    assert "KEYMINT_VAULT_PASSPHRASE: in " in done.stderr
    assert "a value is not a string" in done.stderr
    assert "hunter2" not in done.stderr
