"""The authorization code grant with PKCE on a loopback redirect, against the local IdP, with the
test as the browser: the honest sign-in, and each way someone else's code, state, issuer or ID
token could be slipped into it."""

from __future__ import annotations

import urllib.parse

import aiohttp
import jwt
import pytest

from extauthz.dev.idp import LocalIdp
from extauthz.tools.login.idp import (
    IdpAnswerError,
    IdpClient,
    IdpMetadata,
    LoginError,
    LoginRefused,
    PkceRequest,
    exchange_code,
)
from extauthz.tools.login.loopback import LoopbackReceiver
from tests.helpers import Run

SCOPE = "openid email profile"


async def browse(url: str) -> tuple[int, str]:
    """A browser: open the IdP's page, follow its redirect to the loopback listener."""
    async with aiohttp.ClientSession() as browser:
        async with browser.get(url, allow_redirects=False) as page:
            location = page.headers.get("Location", "")
            if page.status != 302:
                return page.status, ""
        async with browser.get(location) as landing:
            return landing.status, await landing.text()


def metadata_of(
    run: Run, idp: LocalIdp, session: aiohttp.ClientSession
) -> tuple[IdpClient, IdpMetadata]:
    client = IdpClient(session, issuer=idp.issuer, client_id="keymint-cli", allow_http=True)
    return client, run(client.discover())


def sign_in(
    run: Run, idp: LocalIdp, session: aiohttp.ClientSession
) -> tuple[str, PkceRequest, dict[str, str]]:
    client, metadata = metadata_of(run, idp, session)

    async def go() -> tuple[str, PkceRequest, dict[str, str]]:
        async with LoopbackReceiver() as receiver:
            request = PkceRequest(redirect_uri=receiver.redirect_uri, scope=SCOPE)
            url = request.url(metadata, client.client_id)
            status, page = await browse(url)
            assert status == 200
            query = dict(await receiver.wait(5))
            return page, request, query

    return run(go())


def test_signed_in_through_the_loopback_redirect(
    run: Run, idp: LocalIdp, session: aiohttp.ClientSession
) -> None:
    idp.login_as = "ada"
    client, metadata = metadata_of(run, idp, session)
    page, request, query = sign_in(run, idp, session)
    assert "Signed in" in page
    url = urllib.parse.urlsplit(request.url(metadata, "keymint-cli"))
    asked = urllib.parse.parse_qs(url.query)
    assert asked["code_challenge_method"] == ["S256"]
    assert asked["code_challenge"] == [request.challenge]
    assert request.verifier not in request.url(metadata, "keymint-cli")  # only its hash travels
    assert urllib.parse.urlsplit(request.redirect_uri).hostname == "127.0.0.1"

    code = request.code_from(metadata, query)
    tokens = run(exchange_code(client, metadata, request, code))

    claims = jwt.decode(tokens.id_token, options={"verify_signature": False})
    assert claims["sub"] == "00u-ada"
    assert claims["nonce"] == request.nonce


def test_a_stolen_code_is_useless_without_the_verifier(
    run: Run, idp: LocalIdp, session: aiohttp.ClientSession
) -> None:
    idp.login_as = "ada"
    client, metadata = metadata_of(run, idp, session)
    _, request, query = sign_in(run, idp, session)
    code = request.code_from(metadata, query)
    thief = PkceRequest(redirect_uri=request.redirect_uri, scope=SCOPE)
    with pytest.raises(IdpAnswerError) as caught:
        run(exchange_code(client, metadata, thief, code))
    assert caught.value.error == "invalid_grant"
    with pytest.raises(IdpAnswerError):  # and the code is spent: the owner cannot reuse it
        run(exchange_code(client, metadata, request, code))


def test_a_redirect_with_someone_elses_state_is_refused(
    run: Run, idp: LocalIdp, session: aiohttp.ClientSession
) -> None:
    """Login CSRF: an attacker's own code, delivered to our listener, is not our login's."""
    idp.login_as = "ada"
    _, metadata = metadata_of(run, idp, session)
    _, request, query = sign_in(run, idp, session)
    with pytest.raises(LoginError, match="state"):
        request.code_from(metadata, {**query, "state": "attacker"})
    with pytest.raises(LoginError, match="state"):
        request.code_from(metadata, {k: v for k, v in query.items() if k != "state"})


def test_a_redirect_naming_another_idp_is_refused(
    run: Run, idp: LocalIdp, session: aiohttp.ClientSession
) -> None:
    """RFC 9207 mix-up defence: the IdP says it sends `iss`; a redirect from another IdP fails."""
    idp.login_as = "ada"
    _, metadata = metadata_of(run, idp, session)
    assert metadata.iss_in_authorization_response
    _, request, query = sign_in(run, idp, session)
    with pytest.raises(LoginError, match="RFC 9207"):
        request.code_from(metadata, {**query, "iss": "https://evil.example"})
    with pytest.raises(LoginError, match="RFC 9207"):
        request.code_from(metadata, {k: v for k, v in query.items() if k != "iss"})


def test_an_id_token_for_another_login_is_refused(
    run: Run, idp: LocalIdp, session: aiohttp.ClientSession
) -> None:
    request = PkceRequest(redirect_uri="http://127.0.0.1:1/cb", scope=SCOPE)
    with pytest.raises(LoginError, match="nonce"):
        request.check_nonce(idp.id_token("ada", nonce="another-login"))
    with pytest.raises(LoginError, match="nonce"):
        request.check_nonce(idp.id_token("ada"))
    request.check_nonce(idp.id_token("ada", nonce=request.nonce))


def test_a_denied_sign_in(run: Run, idp: LocalIdp, session: aiohttp.ClientSession) -> None:
    idp.login_as = None  # the user refuses at the IdP
    _, metadata = metadata_of(run, idp, session)
    page, request, query = sign_in(run, idp, session)
    assert "refused" in page
    with pytest.raises(LoginRefused, match="denied"):
        request.code_from(metadata, query)


def test_the_listener_waits_for_one_answer_only(run: Run) -> None:
    async def go() -> None:
        async with LoopbackReceiver() as receiver:
            async with aiohttp.ClientSession() as browser:
                async with browser.get(receiver.redirect_uri) as nothing:
                    assert nothing.status == 404  # no state, no error: not an answer
                other_path = receiver.redirect_uri.rsplit("/", 1)[0] + "/guess"
                async with browser.get(other_path + "?state=x&code=y") as guessed:
                    assert guessed.status == 404
            with pytest.raises(LoginError, match="no sign-in came back"):
                await receiver.wait(0.2)

    run(go())


def test_the_listener_is_on_loopback_only(run: Run) -> None:
    async def go() -> str:
        async with LoopbackReceiver() as receiver:
            return receiver.redirect_uri

    uri = run(go())
    assert urllib.parse.urlsplit(uri).hostname == "127.0.0.1"
    assert len(urllib.parse.urlsplit(uri).path) > len("/callback/") + 10  # unguessable path


def test_the_verifier_is_within_rfc_7636_bounds() -> None:
    for _ in range(20):
        request = PkceRequest(redirect_uri="http://127.0.0.1:1/cb", scope=SCOPE)
        assert 43 <= len(request.verifier) <= 128
        assert set(request.verifier) <= set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
        )
