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
