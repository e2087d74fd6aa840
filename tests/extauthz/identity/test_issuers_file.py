"""KEYMINT_ISSUERS_FILE: a typed issuer configuration, checked at start; every fault names the file,
the JSON path and what is wrong, and a gateway with a fault does not start (exit 2)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from extauthz.config import GatewaySettings, SettingsError
from extauthz.identity import GITHUB_ISSUER, IssuerConfigError, load_issuers_file
from extauthz.identity.issuers import Discovery, JwksPath, JwksUri
from extauthz.model import IdentityKind

REPO = Path(__file__).resolve().parents[3]
BASE_ENV = {"KEYMINT_ISSUER": "https://keymint.test", "POLICY_FILE": "policy.json"}


def document() -> dict[str, Any]:
    """A valid file with one issuer of each preset; tests break one field at a time."""
    return {
        "version": 1,
        "issuers": {
            "github": {
                "preset": "github_actions",
                "issuer": GITHUB_ISSUER,
                "audiences": ["https://keymint.example.com/ci"],
            },
            "gitlab": {
                "preset": "gitlab_ci",
                "issuer": "https://gitlab.example.com",
                "audiences": ["https://keymint.example.com"],
                "max_lifetime_seconds": 7500,
                "max_token_age_seconds": 7500,
            },
            "prod-cluster": {
                "preset": "kubernetes",
                "issuer": "https://oidc.prod-cluster.example",
                "audiences": ["https://keymint.example.com"],
                "jwks_file": "prod-cluster-jwks.json",
                "algorithms": ["RS256", "ES256"],
                "claims": {"team": "/kubernetes.io/namespace"},
            },
            "spire": {
                "preset": "spiffe_jwt",
                "trust_domain": "prod.example.com",
                "audiences": ["https://keymint.example.com"],
                "jwks_file": "bundles/prod.json",
            },
            "spire-oidc": {
                "preset": "spiffe_jwt",
                "issuer": "https://oidc-discovery.staging.example.com",
                "trust_domain": "staging.example.com",
                "audiences": ["https://keymint.example.com"],
            },
            "corp": {
                "preset": "oidc",
                "issuer": "https://accounts.google.com",
                "jwks_uri": "https://www.googleapis.com/oauth2/v3/certs",
                "audiences": ["1234987819200.apps.googleusercontent.com"],
                "required_claims": ["hd"],
                "provenance": ["email", "hd"],
                "description": "engineers, from Google Workspace",
            },
        },
    }


def write(tmp_path: Path, doc: object) -> Path:
    path = tmp_path / "issuers.json"
    path.write_text(json.dumps(doc))
    return path


def fault(tmp_path: Path, doc: object) -> IssuerConfigError:
    with pytest.raises(IssuerConfigError) as caught:
        load_issuers_file(write(tmp_path, doc))
    assert str(tmp_path / "issuers.json") in str(caught.value)
    return caught.value


def test_a_file_with_every_preset(tmp_path: Path) -> None:
    configs = {c.name: c for c in load_issuers_file(write(tmp_path, document()))}
    assert configs["github"].preset.kind is IdentityKind.GITHUB_ACTIONS
    assert configs["github"].algorithms == ("RS256",)
    assert configs["github"].max_token_age_seconds == 600
    assert isinstance(configs["github"].keys, Discovery)
    cluster = configs["prod-cluster"]
    assert cluster.keys == JwksPath(tmp_path / "prod-cluster-jwks.json")  # beside the file
    assert cluster.algorithms == ("RS256", "ES256")
    assert cluster.claim_paths["team"] == ("kubernetes.io", "namespace")
    assert cluster.claim_paths["namespace"] == ("kubernetes.io", "namespace")  # preset's kept
    spire = configs["spire"]
    assert spire.issuer is None
    assert spire.label == "spiffe://prod.example.com"
    # A SPIRE OIDC discovery provider: found by `iss`, keys by discovery, sub in its domain.
    spire_oidc = configs["spire-oidc"]
    assert spire_oidc.label == "https://oidc-discovery.staging.example.com"
    assert spire_oidc.trust_domain == "staging.example.com"
    assert isinstance(spire_oidc.keys, Discovery)
    assert configs["corp"].keys == JwksUri("https://www.googleapis.com/oauth2/v3/certs")
    assert configs["corp"].required_claims == ("hd",)
    assert configs["gitlab"].max_lifetime_seconds == 7500


def _edit(path: tuple[str, ...], value: object) -> dict[str, Any]:
    doc = document()
    target: Any = doc
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


_DELETE = object()

FAULTS = [
    (("issuers", "corp", "preset"), "saml", "issuers.corp", "unknown preset 'saml'"),
    (("issuers", "corp", "audience"), ["x"], "issuers.corp.audience", "did you mean 'audiences'"),
    (("issuers", "corp", "audiences"), [], "issuers.corp.audiences", "non-empty array"),
    (("issuers", "corp", "audiences"), _DELETE, "issuers.corp", "missing required key"),
    (("issuers", "corp", "issuer"), "http://idp.example", "issuers.corp.issuer", "https URL"),
    (("issuers", "corp", "issuer"), "https://idp.example/", "issuers.corp.issuer", "https URL"),
    (("issuers", "corp", "issuer"), _DELETE, "issuers.corp.issuer", "is required"),
    (("issuers", "corp", "algorithms"), ["HS256"], "issuers.corp.algorithms", "'HS256' is not"),
    (("issuers", "corp", "algorithms"), ["none"], "issuers.corp.algorithms", "'none' is not"),
    (("issuers", "corp", "algorithms"), [], "issuers.corp.algorithms", "non-empty"),
    (("issuers", "github", "algorithms"), ["ES256"], "issuers.github.algorithms", "RS256 only"),
    (
        ("issuers", "github", "audiences"),
        ["https://github.com/octo-org"],
        "issuers.github.audiences",
        "GitHub's default",
    ),
    (("issuers", "github", "subject_claims"), ["sub"], "issuers.github.subject_claims", "fixed"),
    (("issuers", "corp", "provenance"), ["sub"], "issuers.corp.provenance", "set by keymint"),
    (("issuers", "corp", "provenance"), ["a b"], "issuers.corp.provenance", "not a claim name"),
    (("issuers", "corp", "max_token_age_seconds"), 0, "max_token_age_seconds", "between 1"),
    (("issuers", "corp", "max_lifetime_seconds"), True, "max_lifetime_seconds", "an integer"),
    (("issuers", "corp", "jwks_file"), "keys.json", "issuers.corp.jwks_uri", "not both"),
    (("issuers", "spire", "trust_domain"), _DELETE, "issuers.spire.trust_domain", "required"),
    (("issuers", "spire", "trust_domain"), "Prod", "issuers.spire.trust_domain", "invalid"),
    (("issuers", "spire", "jwks_file"), _DELETE, "issuers.spire.jwks_file", "trust bundle"),
    (("issuers", "corp", "trust_domain"), "x.test", "issuers.corp.trust_domain", "only for it"),
    (("issuers", "prod-cluster", "claims"), {"team": "kubernetes.io"}, "claims.team", "Pointer"),
    (("issuers", "bad name"), {}, "issuers.bad name", "issuer name"),
    (("version",), 2, "version", "version 1"),
    (("issuers",), {}, "issuers", "at least one issuer"),
]


@pytest.mark.parametrize(("path", "value", "location", "message"), FAULTS)
def test_every_fault_is_named(
    tmp_path: Path, path: tuple[str, ...], value: object, location: str, message: str
) -> None:
    error = fault(tmp_path, _edit(path, value))
    assert location in error.location, error
    assert message in error.message, error


def test_an_issuer_configured_twice(tmp_path: Path) -> None:
    doc = document()
    doc["issuers"]["again"] = dict(doc["issuers"]["gitlab"])
    error = fault(tmp_path, doc)
    assert "configured twice" in error.message


def test_a_ghes_default_audience_from_another_github_issuer(tmp_path: Path) -> None:
    doc = document()
    doc["issuers"]["ghes"] = {
        "preset": "github_actions",
        "issuer": "https://ghes.example.com/_services/token",
        "audiences": ["https://keymint.example.com/ci"],
    }
    doc["issuers"]["github"]["audiences"] = ["https://ghes.example.com/octo-org"]
    assert "GitHub's default" in fault(tmp_path, doc).message


@pytest.mark.parametrize(
    "text", ['{"issuers": {"a": {}, "a": {}}}', "{not json", "[]", '"issuers"']
)
def test_a_file_that_is_not_the_format(tmp_path: Path, text: str) -> None:
    path = tmp_path / "issuers.json"
    path.write_text(text)
    with pytest.raises(IssuerConfigError):
        load_issuers_file(path)


# --- the setting ----------------------------------------------------------------------------


def test_the_setting_loads_the_file(tmp_path: Path) -> None:
    env = {**BASE_ENV, "KEYMINT_ISSUERS_FILE": str(write(tmp_path, document()))}
    settings = GatewaySettings.from_env(env)
    assert {c.name for c in settings.jwt_issuers} == set(document()["issuers"])
    assert settings.oidc_issuers == ()


def test_without_the_file_github_comes_from_the_oidc_settings() -> None:
    settings = GatewaySettings.from_env({**BASE_ENV, "KEYMINT_OIDC_AUDIENCES": "https://k/ci"})
    (github,) = settings.jwt_issuers
    assert github.issuer == GITHUB_ISSUER
    assert github.preset.name == "github_actions"


@pytest.mark.parametrize(
    "variable",
    [
        "KEYMINT_OIDC_ISSUERS",
        "KEYMINT_OIDC_AUDIENCES",
        "KEYMINT_OIDC_MAX_TOKEN_AGE_SECONDS",
        "KEYMINT_OIDC_MAX_LIFETIME_SECONDS",
    ],
)
def test_the_file_and_the_github_settings_are_never_both_given(
    tmp_path: Path, variable: str
) -> None:
    env = {**BASE_ENV, "KEYMINT_ISSUERS_FILE": str(write(tmp_path, document())), variable: "600"}
    with pytest.raises(SettingsError) as caught:
        GatewaySettings.from_env(env)
    assert caught.value.variable == variable
    assert "KEYMINT_ISSUERS_FILE" in caught.value.problem


def test_a_fault_names_the_setting(tmp_path: Path) -> None:
    env = {**BASE_ENV, "KEYMINT_ISSUERS_FILE": str(write(tmp_path, _edit(("version",), 3)))}
    with pytest.raises(SettingsError) as caught:
        GatewaySettings.from_env(env)
    assert caught.value.variable == "KEYMINT_ISSUERS_FILE"
    assert "issuers.json: version" in caught.value.problem


def test_serve_stops_with_exit_2_and_the_fault(tmp_path: Path) -> None:
    bad = write(tmp_path, _edit(("issuers", "corp", "algorithms"), ["HS256"]))
    result = subprocess.run(
        [sys.executable, "-m", "extauthz.cli", "serve"],
        env={**BASE_ENV, "KEYMINT_ISSUERS_FILE": str(bad), "PATH": "/usr/bin:/bin"},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "KEYMINT_ISSUERS_FILE" in result.stderr
    assert "issuers.corp.algorithms: 'HS256' is not one of" in result.stderr
    assert "Traceback" not in result.stderr
