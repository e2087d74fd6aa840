"""`extauthz login` end to end in process: the local IdP (device flow and PKCE for real, 1 s poll
interval), then keymint's /token on the real stack (its signers verify the engineer's ID token and
sign). Approval, denial, expiry, slow_down, a wrong audience, a binding that grants nothing, the
refresh token in the keyring, and where the token goes."""

from __future__ import annotations

import asyncio
import io
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from extauthz.dev.idp import LocalIdp
from extauthz.dev.settings import DEPLOY, ORDERS
from extauthz.dev.workloads import CLIENT_ID, ENGINEER_TTL
from extauthz.tools.exchange_client import ExchangedToken
from extauthz.tools.login.command import LoginOptions, run_login, time_left, write_private
from extauthz.tools.login.idp import LoginError, LoginRefused
from extauthz.tools.login.store import KeyringStore, account_for
from tests.extauthz.tools.login.conftest import Live
from tests.extauthz.tools.login.test_pkce import browse
from tests.helpers.keyring_backend import MemoryKeyring


@pytest.fixture(autouse=True)
def fresh_idp(live: Live) -> Iterator[None]:
    idp = live.idp
    yield
    idp.force_slow_down, idp.device_expires_in, idp.client_id = 0, 600, CLIENT_ID
    idp.login_as, idp.refresh_tokens = None, True


@dataclass
class Session:
    """One run of the command: what it printed where, and each pause it took."""

    out: io.StringIO
    err: io.StringIO
    waits: list[float]


def user_acts(
    live: Live, action: Callable[[LocalIdp], None], at: int = 1
) -> tuple[Session, Callable[[float], object]]:
    """A sleep for the command that lets the user act at the IdP at its `at`-th pause."""
    session = Session(io.StringIO(), io.StringIO(), [])

    async def sleep(seconds: float) -> None:
        session.waits.append(seconds)
        if len(session.waits) == at:
            action(live.idp)
        await asyncio.sleep(seconds)

    return session, sleep


def latest_code(idp: LocalIdp) -> str:
    """The code this run of the command shows (the newest device authorization)."""
    return list(idp.devices.values())[-1].user_code


def approve(user: str) -> Callable[[LocalIdp], None]:
    return lambda idp: idp.approve(latest_code(idp), user)


def deny(idp: LocalIdp) -> None:
    idp.deny(latest_code(idp))


def login(
    live: Live,
    options: LoginOptions,
    session: Session,
    sleep: Callable[[float], object],
    store: KeyringStore | None = None,
) -> ExchangedToken:
    return live.loop.run(
        run_login(options, store=store, out=session.out, err=session.err, sleep=sleep),  # type: ignore[arg-type]
        timeout=60,
    )


# --- the device flow -------------------------------------------------------------------------


def test_approved_an_engineer_self_mints_a_scoped_token(live: Live) -> None:
    session, sleep = user_acts(live, approve("ada"))
    token = login(live, live.options(), session, sleep)

    assert session.out.getvalue() == token.access_token + "\n"
    claims = live.claims(token.access_token)
    assert claims["sub"] == f"{live.idp.issuer}#sub=00u-ada"
    assert claims["email"] == "ada@example.com"
    assert claims["scope"] == "deploy:read"
    assert claims["exp"] - claims["iat"] <= ENGINEER_TTL  # type: ignore[operator]
    shown = session.err.getvalue()
    assert "To sign in, open" in shown
    assert "enter the code" in shown
    assert f"keymint token for {DEPLOY}, scope 'deploy:read': valid for 1" in shown
    assert token.access_token not in shown


def test_denied_at_the_idp(live: Live) -> None:
    session, sleep = user_acts(live, deny)
    with pytest.raises(LoginRefused, match="denied"):
        login(live, live.options(), session, sleep)
    assert session.out.getvalue() == ""


def test_the_code_expires_unanswered(live: Live) -> None:
    live.idp.device_expires_in = 3
    session, sleep = user_acts(live, lambda idp: None)
    with pytest.raises(LoginRefused, match="expired"):
        login(live, live.options(), session, sleep)
    assert session.waits == [1, 1]  # a third pause would end past the deadline
    assert "The code expires in 0m 03s" in session.err.getvalue()


def test_slow_down_is_honoured(live: Live) -> None:
    live.idp.force_slow_down = 1
    session, sleep = user_acts(live, approve("ada"))
    login(live, live.options(), session, sleep)
    assert session.waits == [1, 6]


# --- what keymint says ------------------------------------------------------------------------


def test_a_wrong_audience_of_the_id_token(live: Live) -> None:
    """An ID token for another client of the IdP is not for keymint: refused by the gateway."""
    live.idp.client_id = "some-other-app"
    session, sleep = user_acts(live, approve("ada"))
    with pytest.raises(LoginRefused, match="invalid_request: bad_audience"):
        login(live, live.options(client_id="some-other-app"), session, sleep)


def test_a_target_audience_the_role_does_not_allow(live: Live) -> None:
    session, sleep = user_acts(live, approve("ada"))
    with pytest.raises(LoginRefused, match="invalid_target: audience_not_allowed"):
        login(live, live.options(audience=ORDERS, scope=None), session, sleep)


def test_a_binding_that_grants_nothing(live: Live) -> None:
    """Bob's binding names a role whose scopes ALLOWED_SCOPES leaves out: no token at all."""
    session, sleep = user_acts(live, approve("bob"))
    with pytest.raises(LoginRefused, match="invalid_scope: no_scopes"):
        login(live, live.options(scope=None), session, sleep)


def test_an_unverified_email_matches_no_binding(live: Live) -> None:
    session, sleep = user_acts(live, approve("eve"))
    with pytest.raises(LoginRefused, match="invalid_request: no_matching_binding"):
        login(live, live.options(), session, sleep)


def test_more_scope_than_the_role_grants(live: Live) -> None:
    session, sleep = user_acts(live, approve("ada"))
    with pytest.raises(LoginRefused, match="invalid_scope: scope_not_allowed"):
        login(live, live.options(scope="deploy:read deploy:write"), session, sleep)


# --- the refresh token ------------------------------------------------------------------------


def test_the_refresh_token_lives_in_the_keyring_and_signs_in_silently(live: Live) -> None:
    backend = MemoryKeyring()
    store = KeyringStore(account_for(live.idp.issuer, CLIENT_ID), backend)
    session, sleep = user_acts(live, approve("ada"))
    login(live, live.options(), session, sleep, store)
    saved = store.load()
    assert saved is not None
    assert saved in live.idp.refresh  # offline_access was asked for
    assert saved not in session.out.getvalue() + session.err.getvalue()

    started = live.idp.served["device_authorization"]
    again, sleep = user_acts(live, lambda idp: pytest.fail("no user step expected"))
    token = login(live, live.options(), again, sleep, store)
    assert live.idp.served["device_authorization"] == started  # no sign-in asked of the user
    assert again.waits == []
    assert "with the saved sign-in" in again.err.getvalue()
    assert live.claims(token.access_token)["sub"] == f"{live.idp.issuer}#sub=00u-ada"
    rotated = store.load()
    assert rotated is not None
    assert rotated != saved  # the IdP rotated it; the old one is gone
    assert saved not in live.idp.refresh

    live.idp.refresh.clear()  # the IdP revokes it (say, the engineer left)
    third, sleep = user_acts(live, approve("ada"))
    login(live, live.options(), third, sleep, store)
    assert "The saved sign-in was refused (invalid_grant)" in third.err.getvalue()
    assert third.waits  # signed in again, interactively
    assert store.load() not in (None, rotated)


def test_without_a_keyring_no_refresh_token_is_even_asked_for(live: Live) -> None:
    live.idp.refresh.clear()
    session, sleep = user_acts(live, approve("ada"))
    login(live, live.options(), session, sleep, store=None)
    assert live.idp.refresh == {}
    device = list(live.idp.devices.values())[-1]
    assert device.decision == "used"
    assert "offline_access" not in device.scope.split()


# --- where the token goes ---------------------------------------------------------------------


def test_written_to_a_file_only_its_owner_can_read(live: Live, tmp_path: Path) -> None:
    target = tmp_path / "deploy.jwt"
    target.symlink_to(tmp_path / "elsewhere")  # a link planted there is replaced, not followed
    session, sleep = user_acts(live, approve("ada"))
    token = login(live, live.options(out=target), session, sleep)
    assert session.out.getvalue() == ""
    assert not target.is_symlink()
    assert not (tmp_path / "elsewhere").exists()
    assert target.read_text() == token.access_token + "\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert f"Token written to {target}" in session.err.getvalue()


def test_time_left_reads_like_a_clock() -> None:
    assert [time_left(s) for s in (0, 59, 899, 3600, 3661, -5)] == [
        "0m 00s",
        "0m 59s",
        "14m 59s",
        "1h 00m",
        "1h 01m",
        "0m 00s",
    ]


# --- PKCE -------------------------------------------------------------------------------------


def test_pkce_on_a_loopback_redirect(live: Live) -> None:
    live.idp.login_as = "ada"
    visits: list[tuple[int, str]] = []

    def browser(url: str) -> None:
        async def visit() -> None:
            visits.append(await browse(url))

        asyncio.get_running_loop().create_task(visit())

    session = Session(io.StringIO(), io.StringIO(), [])
    token = live.loop.run(
        run_login(
            live.options(flow="pkce"),
            store=None,
            out=session.out,
            err=session.err,
            browser=browser,
        ),
        timeout=60,
    )
    assert live.claims(token.access_token)["sub"] == f"{live.idp.issuer}#sub=00u-ada"
    assert visits == [(200, visits[0][1])]
    assert "To sign in, open " + live.idp.issuer + "/authorize?" in session.err.getvalue()


def test_options_refuse_a_login_without_openid() -> None:
    with pytest.raises(LoginError, match="openid"):
        LoginOptions("https://i", "c", "https://t", "a", idp_scope="email")
    with pytest.raises(LoginError, match="--flow"):
        LoginOptions("https://i", "c", "https://t", "a", flow="implicit")


def test_an_out_file_that_cannot_be_written_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LoginError, match=r"--out .*missing"):
        write_private(tmp_path / "missing" / "deploy.jwt", "token")
    (tmp_path / "a-directory").mkdir()
    with pytest.raises(LoginError, match=r"--out .*a-directory"):
        write_private(tmp_path / "a-directory", "token")
    assert list(tmp_path.iterdir()) == [tmp_path / "a-directory"]  # no temporary file left
