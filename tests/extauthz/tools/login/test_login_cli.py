"""`extauthz login` as an engineer runs it: the command in its own process, the local IdP and the
real stack in this one, and the test as the engineer's browser. Device flow and PKCE; the refresh
token in a keyring (a stand-in for the OS's, `tests.helpers.keyring_backend.FileKeyring`) and
nowhere else; then `extauthz token-info`."""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from extauthz.dev.github import compact_jws
from extauthz.dev.settings import DEPLOY
from extauthz.dev.workloads import CLIENT_ID
from tests.conftest import REPO
from tests.extauthz.tools.login.conftest import Live
from tests.extauthz.tools.login.test_pkce import browse

KEYRING = "tests.helpers.keyring_backend.FileKeyring"


@dataclass
class Command:
    """A running `extauthz ...` and what it has written to stderr so far."""

    process: subprocess.Popen[str]
    stderr: str = ""

    def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        assert self.process.stderr is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.stderr)
            if found:
                return found
            # Raw reads: a text reader's buffer would hide lines from select().
            descriptor = self.process.stderr.fileno()
            ready, _, _ = select.select([descriptor], [], [], 0.2)
            if ready:
                chunk = os.read(descriptor, 65536)
                if not chunk and self.process.poll() is not None:
                    break
                self.stderr += chunk.decode()
        raise AssertionError(f"{pattern!r} never appeared; stderr so far:\n{self.stderr}")

    def finish(self, timeout: float = 60.0) -> tuple[int, str, str]:
        out, err = self.process.communicate(timeout=timeout)
        self.stderr += err
        return self.process.returncode, out, self.stderr


STARTED: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def no_command_left_running() -> Iterator[None]:
    yield
    while STARTED:
        process = STARTED.pop()
        if process.poll() is None:  # a test that failed half-way: stop what it started
            process.kill()
            process.communicate(timeout=10)


def extauthz(*args: str, env: Mapping[str, str]) -> Command:
    process = subprocess.Popen(
        [sys.executable, "-m", "extauthz.cli", *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    STARTED.append(process)
    return Command(process)


async def open_page(url: str) -> tuple[int, str]:
    """The browser on the IdP's device page (no redirect there)."""
    async with aiohttp.ClientSession() as browser, browser.get(url) as page:
        return page.status, await page.text()


@pytest.fixture
def keyring_env(tmp_path: Path) -> dict[str, str]:
    return {"PYTHON_KEYRING_BACKEND": KEYRING, "KEYMINT_TEST_KEYRING": str(tmp_path / "ring.json")}


def login_args(live: Live, *extra: str) -> list[str]:
    return [
        "login",
        "--idp",
        live.idp.issuer,
        "--client-id",
        CLIENT_ID,
        "--token-url",
        live.token_url,
        "--audience",
        DEPLOY,
        "--scope",
        "deploy:read",
        "--allow-http",
        *extra,
    ]


def test_device_flow_then_a_silent_login_from_the_keyring(
    live: Live, keyring_env: dict[str, str]
) -> None:
    command = extauthz(*login_args(live), env=keyring_env)
    complete = command.wait_for(r"\(or open (\S+)\)").group(1)
    # The engineer opens the page in a browser and approves, signed in as Ada.
    status, page = live.loop.run(open_page(complete + "&user=ada"))
    assert (status, page) == (200, "approved as ada")
    code, out, err = command.finish()

    assert code == 0, err
    token = out.strip()
    assert live.claims(token)["sub"] == f"{live.idp.issuer}#sub=00u-ada"
    assert f"keymint token for {DEPLOY}, scope 'deploy:read': valid for 1" in err
    ring = json.loads(Path(keyring_env["KEYMINT_TEST_KEYRING"]).read_text())
    (refresh,) = ring.values()
    assert refresh in live.idp.refresh
    assert refresh not in out + err

    again = extauthz(*login_args(live), env=keyring_env)
    code, out, err = again.finish()
    assert code == 0, err
    assert "To sign in" not in err
    assert "with the saved sign-in" in err
    assert live.claims(out.strip())["sub"] == f"{live.idp.issuer}#sub=00u-ada"


def test_pkce_with_the_browser_as_the_test(live: Live, tmp_path: Path) -> None:
    live.idp.login_as = "ada"
    out_file = tmp_path / "deploy.jwt"
    env = {"PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}
    command = extauthz(
        *login_args(live, "--flow", "pkce", "--no-browser", "--out", str(out_file)), env=env
    )
    try:
        url = command.wait_for(r"To sign in, open (\S+)").group(1)
        status, page = live.loop.run(browse(url))
        assert status == 200
        assert "Signed in" in page
        code, out, err = command.finish()
    finally:
        live.idp.login_as = None
    assert code == 0, err
    assert out == ""
    assert "No OS keyring here" in err
    assert live.claims(out_file.read_text().strip())["scope"] == "deploy:read"

    info = extauthz("token-info", str(out_file), env={})
    code, out, _ = info.finish()
    assert code == 0
    assert re.search(rf"keymint token for {DEPLOY}, scope 'deploy:read': valid for 1[45]m", out)
    assert f"subject {live.idp.issuer}#sub=00u-ada" in out


def test_a_denied_sign_in_exits_1(live: Live, keyring_env: dict[str, str]) -> None:
    command = extauthz(*login_args(live), env=keyring_env)
    complete = command.wait_for(r"\(or open (\S+)\)").group(1)
    live.loop.run(open_page(complete + "&decision=deny"))
    code, out, err = command.finish()
    assert (code, out) == (1, "")
    assert "extauthz login: the sign-in request was denied at the IdP" in err


def test_a_keymint_refusal_exits_1_with_its_reason(live: Live, keyring_env: dict[str, str]) -> None:
    command = extauthz(*login_args(live, "--scope", "deploy:write"), env=keyring_env)
    complete = command.wait_for(r"\(or open (\S+)\)").group(1)
    live.loop.run(open_page(complete + "&user=ada"))
    code, out, err = command.finish()
    assert (code, out) == (1, "")
    assert "keymint refused the exchange: invalid_scope: scope_not_allowed" in err


def test_missing_settings_exit_2(keyring_env: dict[str, str]) -> None:
    code, _, err = extauthz("login", "--audience", DEPLOY, env=keyring_env).finish()
    assert code == 2
    assert "--idp is required (or set KEYMINT_LOGIN_IDP)" in err


def test_token_info_on_an_expired_token_exits_1(tmp_path: Path) -> None:
    old = compact_jws({"alg": "EdDSA"}, {"aud": DEPLOY, "exp": int(time.time()) - 125}, None)
    path = tmp_path / "old.jwt"
    path.write_text(old + "AAAA")
    code, out, _ = extauthz("token-info", str(path), env={}).finish()
    assert code == 1
    assert f"keymint token for {DEPLOY}: expired 2m 0" in out
