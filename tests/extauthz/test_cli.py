"""The `extauthz` console script: parsing, the error edge, `serve`'s ready line, `audit verify`."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
import uvloop

from extauthz.cli import build_parser, main
from extauthz.config import GatewaySettings
from extauthz.errors import ExtAuthzError
from extauthz.server import app
from extauthz.tools import verify_cli
from signer.audit import AuditLog
from tests.extauthz.configs import serving_env


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for command in ("serve", "exchange", "verify", "pin-keys", "audit"):
        assert command in out


@pytest.mark.parametrize(
    "argv",
    [
        ["exchange", "--help"],
        ["verify", "--help"],
        ["audit", "verify", "--help"],
        ["serve", "--help"],
    ],
)
def test_command_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("usage: extauthz ")


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["audit"],
        ["nonsense"],
        ["verify", "--issuer", "i", "--audience", "a", "token"],  # no key source
        # Without a trust root, a served JWKS is trusted only when the caller says so.
        ["verify", "--jwks-file", "k.json", "--issuer", "i", "--audience", "a", "token"],
        ["verify", "--trust-root", "r.json", "--issuer", "i", "--audience", "a", "token"],
        ["pin-keys", "--trust-root", "r.json", "--out", "jwks.json"],  # no endorsements
        ["exchange", "--audience", "a", "--token-url", "u", "--output", "json", "--export-env"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_parsing() -> None:
    args = build_parser().parse_args(["-v", "audit", "verify", "log.jsonl"])
    assert args.verbose
    assert args.path == Path("log.jsonl")
    args = build_parser().parse_args(
        ["exchange", "--audience", "a", "--token-url", "https://k/token", "--export-env"]
    )
    assert args.export_env == "KEYMINT_TOKEN"
    assert args.output == "token"


def test_extauthz_error_becomes_exit_2_with_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def failing(args: argparse.Namespace) -> int:
        raise ExtAuthzError("the thing is broken")

    monkeypatch.setattr(verify_cli, "run", failing)
    code = main(["verify", "--jwks-file", "k.json", "--issuer", "i", "--audience", "a", "t"])
    assert code == 2
    captured = capsys.readouterr()
    assert captured.err == "extauthz verify: the thing is broken\n"
    assert captured.out == ""


def test_other_exceptions_are_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    def buggy(args: argparse.Namespace) -> int:
        raise RuntimeError("a bug")

    monkeypatch.setattr(verify_cli, "run", buggy)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["verify", "--jwks-file", "k.json", "--issuer", "i", "--audience", "a", "t"])


# --- serve -----------------------------------------------------------------------------------


@pytest.fixture
def gateway_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in serving_env(tmp_path).items():
        monkeypatch.setenv(name, value)


def test_serve_prints_the_ready_line(
    gateway_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[GatewaySettings] = []

    async def fake_serve(
        settings: GatewaySettings,
        *,
        started: Callable[[int, int], None] | None = None,
        stop: asyncio.Event | None = None,
    ) -> None:
        seen.append(settings)
        assert started is not None
        started(45678, 8081)

    monkeypatch.setattr(app, "serve", fake_serve)
    assert main(["serve"]) == 0
    assert capsys.readouterr().out == "keymint-gateway ready grpc_port=45678 http_port=8081\n"
    assert seen[0].issuer == "https://keymint.test"


def test_serve_runs_the_gateway_on_uvloop(
    gateway_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    loops: list[type[asyncio.AbstractEventLoop]] = []

    async def fake_serve(settings: GatewaySettings, **kwargs: object) -> None:
        loops.append(type(asyncio.get_running_loop()))

    monkeypatch.setattr(app, "serve", fake_serve)
    assert main(["serve"]) == 0
    assert loops == [uvloop.Loop]  # signer.runtime: what measured faster


def test_serve_with_bad_settings_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in serving_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("KEYMINT_ISSUER", raising=False)
    assert main(["serve"]) == 2
    assert capsys.readouterr().err == (
        "extauthz serve: KEYMINT_ISSUER: is required "
        "(for example KEYMINT_ISSUER=https://keymint.example.com)\n"
    )


def test_serve_refuses_trust_envoy_principal_without_a_traceback(
    gateway_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KEYMINT_TRUST_ENVOY_PRINCIPAL", "true")
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("extauthz serve: KEYMINT_TRUST_ENVOY_PRINCIPAL: is no longer supported")
    assert "include_peer_certificate: true" in err
    assert "Traceback" not in err


# --- audit verify ----------------------------------------------------------------------------


@pytest.fixture
def audit_log(tmp_path: Path) -> Path:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, clock=lambda: 1_700_000_000.0) as log:
        log.append("mint", {"jti": "a", "token_ref": "sha256:0123456789abcdef"})
        log.append("deny", {"reason": "no_matching_binding"})
        log.append("mint", {"jti": "b", "token_ref": "sha256:fedcba9876543210"})
    return path


def test_audit_verify_good_log(audit_log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "verify", str(audit_log)]) == 0
    assert capsys.readouterr().out.startswith("OK: 3 records, last seq 3")


def test_audit_verify_edited_line(audit_log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = audit_log.read_text().splitlines(keepends=True)
    lines[1] = lines[1].replace("no_matching_binding", "allowed")
    audit_log.write_text("".join(lines))
    assert main(["audit", "verify", str(audit_log)]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith("BROKEN:")
    assert "first problem at line 2 (seq 2): hash_mismatch" in captured.err


def test_audit_verify_unreadable_log_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "verify", str(tmp_path / "absent.jsonl")]) == 2
    assert "cannot read" in capsys.readouterr().err
