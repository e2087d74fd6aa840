"""Gateway settings: the settings of issue 8's smaller holes, and the one it removed."""

from __future__ import annotations

import pytest

from extauthz.config import GatewaySettings, SettingsError
from extauthz.policy import PolicyHeaders

BASE = {
    "KEYMINT_ISSUER": "https://keymint.test",
    "POLICY_FILE": "/etc/keymint/policy.json",
    "KEYMINT_OIDC_AUDIENCES": "https://keymint.test/ci",
}


def settings(**env: str) -> GatewaySettings:
    return GatewaySettings.from_env({**BASE, **env})


def refusal(**env: str) -> SettingsError:
    with pytest.raises(SettingsError) as caught:
        settings(**env)
    return caught.value


@pytest.mark.parametrize("value", ["true", "1", "yes", "on"])
def test_trust_envoy_principal_is_refused_at_start_naming_include_peer_certificate(
    value: str,
) -> None:
    """A bare principal is the gateway's word: every signer's guard refused it after a wasted
    signing round. The setting now stops the gateway at start and says what to do instead."""
    error = refusal(KEYMINT_TRUST_ENVOY_PRINCIPAL=value)
    assert error.variable == "KEYMINT_TRUST_ENVOY_PRINCIPAL"
    assert "no signer can check" in error.problem
    assert "include_peer_certificate: true" in error.problem


@pytest.mark.parametrize("value", ["", "false", "0"])
def test_trust_envoy_principal_off_is_what_always_happens(value: str) -> None:
    assert settings(KEYMINT_TRUST_ENVOY_PRINCIPAL=value).issuer == "https://keymint.test"


def test_oidc_max_lifetime_defaults_to_an_hour_and_is_configurable() -> None:
    assert settings().oidc_max_lifetime == 3600
    assert settings(KEYMINT_OIDC_MAX_LIFETIME_SECONDS="21600").oidc_max_lifetime == 21600
    error = refusal(KEYMINT_OIDC_MAX_LIFETIME_SECONDS="0")
    assert error.variable == "KEYMINT_OIDC_MAX_LIFETIME_SECONDS"


def test_policy_ignored_headers_default_replace_and_refuse() -> None:
    assert settings().policy_headers == PolicyHeaders.default()
    custom = settings(KEYMINT_POLICY_IGNORED_HEADERS="x-request-id, X-Trace-*").policy_headers
    assert custom == PolicyHeaders(frozenset({"x-request-id"}), ("x-trace-",))
    error = refusal(KEYMINT_POLICY_IGNORED_HEADERS="x-request-id bad*name")
    assert error.variable == "KEYMINT_POLICY_IGNORED_HEADERS"
    assert "'bad*name' is not a header name" in error.problem


def test_shared_state_settings_are_checked_at_start() -> None:
    settings = GatewaySettings.from_env(BASE)
    assert (settings.redis, settings.state_sync_seconds, settings.workers) == (None, 0.5, 1)
    assert settings.state_max_staleness_seconds == 5.0
    for extra, variable in (
        ({"KEYMINT_REDIS_URL": "redis://:pw@redis:6379/0"}, "KEYMINT_REDIS_URL"),
        ({"KEYMINT_REDIS_CREDENTIALS_FILE": "/run/redis"}, "KEYMINT_REDIS_CREDENTIALS_FILE"),
        ({"KEYMINT_STATE_SYNC_SECONDS": "6"}, "KEYMINT_STATE_SYNC_SECONDS"),
        (
            {"KEYMINT_STATE_SYNC_SECONDS": "2", "KEYMINT_STATE_MAX_STALENESS_SECONDS": "9"},
            "KEYMINT_STATE_SYNC_SECONDS",
        ),
        (
            {"KEYMINT_WORKERS": "2", "KEYMINT_GRPC_LISTEN": "unix:/tmp/check.sock"},
            "KEYMINT_WORKERS",
        ),
    ):
        with pytest.raises(SettingsError) as caught:
            GatewaySettings.from_env({**BASE, **extra})
        assert caught.value.variable == variable


# --- Rego settings (issue 13) --------------------------------------------------------------

REGO = {"REGO_FILE": "/etc/keymint/policy.rego"}


@pytest.mark.parametrize(
    ("raw", "query"),
    [
        ("envoy/authz/allow", "data.envoy.authz.allow"),  # opa-envoy-plugin's `path`
        ("/istio/authz/allow", "data.istio.authz.allow"),
        ("data.envoy.authz.allow", "data.envoy.authz.allow"),
        ("data.envoy.authz", "data.envoy.authz"),
    ],
)
def test_the_rego_query_in_path_or_data_form(raw: str, query: str) -> None:
    assert settings(**REGO, KEYMINT_REGO_QUERY=raw).rego_query == query


def test_the_rego_query_defaults_to_keymints_package_and_refuses_nonsense() -> None:
    assert settings(**REGO).rego_query == "data.keymint.authz"
    error = refusal(**REGO, KEYMINT_REGO_QUERY="envoy.authz/allow")
    assert error.variable == "KEYMINT_REGO_QUERY"
    assert "neither a path (envoy/authz/allow) nor a data reference" in error.problem


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("KEYMINT_REGO_QUERY", "envoy/authz/allow"),
        ("KEYMINT_POLICY_CREDENTIAL_HEADERS", "authorization"),
        ("KEYMINT_POLICY_PER_REQUEST_INPUT", "true"),
    ],
)
def test_rego_settings_without_a_rego_policy_are_refused(name: str, value: str) -> None:
    error = refusal(**{name: value})
    assert (error.variable, error.problem) == (
        name,
        "only applies to a Rego policy, and REGO_FILE is not set",
    )


def test_rego_alone_is_said_explicitly() -> None:
    alone = {"KEYMINT_REGO_ALONE": "true", "POLICY_FILE": "", **REGO}
    decided = settings(**alone)
    assert (decided.rego_alone, decided.policy_file) == (True, None)
    missing = refusal(POLICY_FILE="", **REGO)  # no JSON policy, and nobody said Rego alone
    assert missing.variable == "POLICY_FILE"
    assert "KEYMINT_REGO_ALONE=true" in missing.problem
    both = refusal(KEYMINT_REGO_ALONE="true", **REGO)
    assert both.variable == "POLICY_FILE"
    assert "decides alone" in both.problem
    no_rego = refusal(KEYMINT_REGO_ALONE="true", POLICY_FILE="")
    assert no_rego.variable == "REGO_FILE"


def test_credential_headers_a_policy_may_read() -> None:
    assert settings(**REGO).policy_headers.credentials == frozenset()
    readable = settings(**REGO, KEYMINT_POLICY_CREDENTIAL_HEADERS="Authorization cookie")
    assert readable.policy_headers.credentials == frozenset({"authorization", "cookie"})
    assert readable.policy_headers.select({"authorization": "Basic x", "cookie": "c"}) == (
        ("authorization", "Basic x"),
        ("cookie", "c"),
    )
    error = refusal(**REGO, KEYMINT_POLICY_CREDENTIAL_HEADERS="x-api-key")
    assert error.variable == "KEYMINT_POLICY_CREDENTIAL_HEADERS"
    assert "x-api-key: not a credential header" in error.problem


def test_per_request_input_is_off_unless_asked_for() -> None:
    assert settings(**REGO).policy_per_request_input is False
    assert settings(**REGO, KEYMINT_POLICY_PER_REQUEST_INPUT="true").policy_per_request_input
