"""The Check port's settings: each form parses, and each missing or contradictory combination
stops the start with an error that names the variable and says what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from extauthz.config import (
    CheckPortInsecure,
    CheckPortTls,
    CheckPortUnix,
    GatewaySettings,
    SettingsError,
)

BASE = {"KEYMINT_ISSUER": "https://k", "POLICY_FILE": "p", "KEYMINT_OIDC_AUDIENCES": "a"}
ENVOY = "spiffe://keymint.internal/keymint/envoy"
TLS = {
    "KEYMINT_GRPC_LISTEN": "0.0.0.0:9001",
    "KEYMINT_CHECK_TLS_CERT": "/tls/tls.crt",
    "KEYMINT_CHECK_TLS_KEY": "/tls/tls.key",
    "KEYMINT_CHECK_CLIENT_CA": "/tls/ca.crt",
    "KEYMINT_CHECK_ALLOWED_CLIENTS": f"{ENVOY}, spiffe://prod.test/ns/edge/sa/envoy",
}


def settings(**env: str) -> GatewaySettings:
    return GatewaySettings.from_env({**BASE, **env})


def refusal(**env: str) -> SettingsError:
    with pytest.raises(SettingsError) as refused:
        settings(**env)
    return refused.value


# --- the three forms --------------------------------------------------------------------------


def test_the_default_is_an_owner_only_unix_socket() -> None:
    """With nothing set, the port is one no other user can open (and the signers, which read
    these settings for their guard, need no Check port settings at all)."""
    port = settings().check_port
    assert port == CheckPortUnix(Path("state/check.sock"), 0o600)


def test_mtls_on_tcp() -> None:
    port = settings(**TLS).check_port
    assert port == CheckPortTls(
        address="0.0.0.0:9001",
        cert=Path("/tls/tls.crt"),
        key=Path("/tls/tls.key"),
        client_ca=Path("/tls/ca.crt"),
        allowed_clients=frozenset({ENVOY, "spiffe://prod.test/ns/edge/sa/envoy"}),
    )


@pytest.mark.parametrize(
    ("listen", "path"),
    [
        ("unix:/var/run/keymint/check.sock", "/var/run/keymint/check.sock"),
        ("unix:///var/run/keymint/check.sock", "/var/run/keymint/check.sock"),
        ("unix:run/check.sock", "run/check.sock"),
    ],
)
def test_unix_socket_forms(listen: str, path: str) -> None:
    assert settings(KEYMINT_GRPC_LISTEN=listen).check_port == CheckPortUnix(Path(path), 0o600)


@pytest.mark.parametrize(("raw", "mode"), [("0660", 0o660), ("600", 0o600), ("0o640", 0o640)])
def test_a_socket_mode_may_open_the_socket_to_the_group(raw: str, mode: int) -> None:
    port = settings(KEYMINT_GRPC_LISTEN="unix:/run/k.sock", KEYMINT_GRPC_SOCKET_MODE=raw)
    assert port.check_port == CheckPortUnix(Path("/run/k.sock"), mode)


def test_plaintext_tcp_with_the_dev_switch() -> None:
    port = settings(KEYMINT_GRPC_LISTEN="127.0.0.1:9001", KEYMINT_DEV_INSECURE_CHECK_PORT="true")
    assert port.check_port == CheckPortInsecure("127.0.0.1:9001")


# --- refusals ---------------------------------------------------------------------------------


def test_plaintext_tcp_without_the_switch_names_the_settings_to_give() -> None:
    error = refusal(KEYMINT_GRPC_LISTEN="0.0.0.0:9001")
    assert error.variable == "KEYMINT_GRPC_LISTEN"
    assert str(error) == (
        "KEYMINT_GRPC_LISTEN: 0.0.0.0:9001 is a TCP address, and a Check port without mTLS lets "
        "anyone who reaches it obtain tokens: set KEYMINT_CHECK_TLS_CERT, KEYMINT_CHECK_TLS_KEY, "
        "KEYMINT_CHECK_CLIENT_CA, KEYMINT_CHECK_ALLOWED_CLIENTS; or listen on unix:/path beside "
        "Envoy; or, for development only, set KEYMINT_DEV_INSECURE_CHECK_PORT=true "
        "(for example KEYMINT_GRPC_LISTEN=unix:/var/run/keymint/check.sock)"
    )


def test_plaintext_on_loopback_is_refused_too() -> None:
    """Loopback is reachable by every process on the host, the gateway's neighbours included."""
    assert refusal(KEYMINT_GRPC_LISTEN="127.0.0.1:9001").variable == "KEYMINT_GRPC_LISTEN"


@pytest.mark.parametrize(
    "missing",
    [
        "KEYMINT_CHECK_TLS_CERT",
        "KEYMINT_CHECK_TLS_KEY",
        "KEYMINT_CHECK_CLIENT_CA",
        "KEYMINT_CHECK_ALLOWED_CLIENTS",
    ],
)
def test_each_missing_mtls_setting_is_named(missing: str) -> None:
    error = refusal(**{**TLS, missing: ""})
    assert error.variable == missing
    assert error.problem.startswith("is required for an mTLS Check port (given: ")


def test_the_dev_switch_contradicts_mtls_settings() -> None:
    error = refusal(**TLS, KEYMINT_DEV_INSECURE_CHECK_PORT="true")
    assert error.variable == "KEYMINT_DEV_INSECURE_CHECK_PORT"
    assert error.problem == (
        "turns mTLS off, but KEYMINT_CHECK_TLS_CERT, KEYMINT_CHECK_TLS_KEY, "
        "KEYMINT_CHECK_CLIENT_CA, KEYMINT_CHECK_ALLOWED_CLIENTS configure it: choose one"
    )


def test_the_dev_switch_contradicts_a_single_mtls_setting() -> None:
    error = refusal(
        KEYMINT_GRPC_LISTEN="127.0.0.1:9001",
        KEYMINT_DEV_INSECURE_CHECK_PORT="true",
        KEYMINT_CHECK_CLIENT_CA="/tls/ca.crt",
    )
    assert error.variable == "KEYMINT_DEV_INSECURE_CHECK_PORT"


def test_the_dev_switch_is_for_tcp_only() -> None:
    error = refusal(KEYMINT_GRPC_LISTEN="unix:/run/k.sock", KEYMINT_DEV_INSECURE_CHECK_PORT="1")
    assert error.variable == "KEYMINT_DEV_INSECURE_CHECK_PORT"
    assert "Unix socket" in error.problem


def test_the_dev_switch_must_be_a_boolean() -> None:
    error = refusal(KEYMINT_GRPC_LISTEN="127.0.0.1:9001", KEYMINT_DEV_INSECURE_CHECK_PORT="maybe")
    assert str(error) == (
        "KEYMINT_DEV_INSECURE_CHECK_PORT: 'maybe' is not a boolean (true/false) "
        "(for example KEYMINT_DEV_INSECURE_CHECK_PORT=false)"
    )


def test_tls_settings_with_a_unix_socket_are_refused() -> None:
    error = refusal(KEYMINT_GRPC_LISTEN="unix:/run/k.sock", KEYMINT_CHECK_TLS_CERT="/tls/tls.crt")
    assert error.variable == "KEYMINT_CHECK_TLS_CERT"
    assert error.problem == (
        "is for a TCP Check port; KEYMINT_GRPC_LISTEN is a Unix socket (unix:/run/k.sock)"
    )


def test_a_socket_mode_with_tcp_is_refused() -> None:
    error = refusal(**TLS, KEYMINT_GRPC_SOCKET_MODE="0600")
    assert error.variable == "KEYMINT_GRPC_SOCKET_MODE"
    assert "TCP address" in error.problem


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("0666", "grants more than read and write to the owner and the group (at most 0660)"),
        ("0604", "grants more than read and write to the owner and the group (at most 0660)"),
        ("0700", "grants more than read and write to the owner and the group (at most 0660)"),
        ("0400", "must give the owner read and write (0600)"),
        ("0060", "must give the owner read and write (0600)"),
        ("rw-------", "is not an octal mode"),
        ("0800", "is not an octal mode"),
    ],
)
def test_socket_modes_that_open_the_socket_too_far_are_refused(raw: str, problem: str) -> None:
    error = refusal(KEYMINT_GRPC_LISTEN="unix:/run/k.sock", KEYMINT_GRPC_SOCKET_MODE=raw)
    assert error.variable == "KEYMINT_GRPC_SOCKET_MODE"
    assert problem in error.problem


@pytest.mark.parametrize(
    ("listen", "problem"),
    [
        ("unix:", "names no socket file"),
        ("unix:/run/keymint/", "names no socket file"),
        ("unix://run/k.sock", "write unix:///absolute/path or unix:path"),
        ("unix:/" + "x" * 120, "a Unix socket path holds at most 107"),
        ("9001", "is neither HOST:PORT nor unix:/path/to/socket"),
        ("unix-abstract:keymint", "is neither HOST:PORT nor unix:/path/to/socket"),
        ("dns:gateway:9001", "is neither HOST:PORT nor unix:/path/to/socket"),
        ("0.0.0.0:http", "is neither HOST:PORT nor unix:/path/to/socket"),
        ("0.0.0.0:70000", "port 70000 is above 65535"),
    ],
)
def test_listen_addresses_that_are_not_a_socket_or_host_port(listen: str, problem: str) -> None:
    """An abstract socket (unix-abstract:) would have no file mode: anyone in the network
    namespace could connect. It is refused like any other unknown form."""
    error = refusal(**{**TLS, "KEYMINT_GRPC_LISTEN": listen})
    assert error.variable == "KEYMINT_GRPC_LISTEN"
    assert problem in error.problem


def test_an_ipv6_listen_address_is_host_port() -> None:
    port = settings(**{**TLS, "KEYMINT_GRPC_LISTEN": "[::]:9001"}).check_port
    assert isinstance(port, CheckPortTls)
    assert port.address == "[::]:9001"


@pytest.mark.parametrize(
    "allowed",
    ["envoy", "spiffe://", "spiffe://keymint.internal", "https://keymint.internal/envoy", " , "],
)
def test_allowed_clients_must_be_spiffe_ids(allowed: str) -> None:
    error = refusal(**{**TLS, "KEYMINT_CHECK_ALLOWED_CLIENTS": allowed})
    assert error.variable == "KEYMINT_CHECK_ALLOWED_CLIENTS"
