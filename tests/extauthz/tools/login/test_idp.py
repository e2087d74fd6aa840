"""The device authorization grant (RFC 8628) against the local IdP: approval, denial, expiry
(both the IdP's and the client's own deadline), `authorization_pending` and `slow_down` timing,
and discovery that refuses a document naming another issuer."""

from __future__ import annotations

import aiohttp
import jwt
import pytest
from aiohttp import web

from extauthz.dev.idp import LocalIdp
from extauthz.tools.login.idp import (
    DeviceAuthorization,
    DeviceFlow,
    IdpClient,
    IdpMetadata,
    LoginError,
    LoginRefused,
    _Answer,
)
from tests.extauthz.tools.login.conftest import sleeper
from tests.helpers import ManualClock, Run

SCOPE = "openid email profile"


def client(
    idp: LocalIdp, session: aiohttp.ClientSession, client_id: str = "keymint-cli"
) -> IdpClient:
    return IdpClient(session, issuer=idp.issuer, client_id=client_id, allow_http=True)


def flow(
    run: Run, idp: LocalIdp, session: aiohttp.ClientSession, clock: ManualClock, during: object
) -> tuple[DeviceFlow, DeviceAuthorization]:
    idp_client = client(idp, session)
    metadata = run(idp_client.discover())
    device = DeviceFlow(
        idp_client,
        metadata,
        scope=SCOPE,
        sleep=sleeper(clock, during),
        clock=clock,  # type: ignore[arg-type]
    )
    return device, run(device.start())


def test_approved_after_a_few_polls(
    run: Run, idp: LocalIdp, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    codes: list[str] = []
    device, authorization = flow(
        run, idp, session, clock, lambda n: n == 3 and idp.approve(codes[0], "ada")
    )
    codes.append(authorization.user_code.replace("-", ""))
    assert authorization.verification_uri == f"{idp.issuer}/device"
    assert authorization.interval == 5

    tokens = run(device.poll(authorization))

    claims = jwt.decode(tokens.id_token, options={"verify_signature": False})
    assert (claims["sub"], claims["aud"], claims["email"]) == (
        "00u-ada",
        "keymint-cli",
        "ada@example.com",
    )
    assert device.waits == [5, 5, 5]  # it waited the interval before every poll
    assert [b - a for a, b in zip(idp.polls, idp.polls[1:], strict=False)] == [5, 5]
    assert tokens.refresh_token is None  # no offline_access asked for


def test_slow_down_adds_five_seconds_to_every_later_poll(
    run: Run, idp: LocalIdp, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    idp.force_slow_down = 2
    codes: list[str] = []
    device, authorization = flow(
        run, idp, session, clock, lambda n: n == 4 and idp.approve(codes[0], "ada")
    )
    codes.append(authorization.user_code.replace("-", ""))

    run(device.poll(authorization))

    # Two slow_downs: 5 -> 10 -> 15, and the interval stays raised.
    assert device.waits == [5, 10, 15, 15]
    assert idp.served["token:urn:ietf:params:oauth:grant-type:device_code"] == 4


def test_denied(
    run: Run, idp: LocalIdp, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    codes: list[str] = []
    device, authorization = flow(run, idp, session, clock, lambda n: n == 2 and idp.deny(codes[0]))
    codes.append(authorization.user_code.replace("-", ""))
    with pytest.raises(LoginRefused, match="denied"):
        run(device.poll(authorization))
    assert len(device.waits) == 2


def test_the_client_keeps_the_deadline_itself(
    run: Run, idp: LocalIdp, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    idp.device_expires_in = 22
    device, authorization = flow(run, idp, session, clock, lambda n: None)
    with pytest.raises(LoginRefused, match="expired"):
        run(device.poll(authorization))
    assert device.waits == [5, 5, 5, 5]  # the fifth would end at 25 s, after the deadline
    assert len(idp.polls) == 4


def test_the_idps_expired_token_ends_the_login(
    run: Run, idp: LocalIdp, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    # The IdP's own clock runs ahead of what it told the client (expires_in 600 s).
    device, authorization = flow(run, idp, session, clock, lambda n: n == 2 and clock.advance(600))
    with pytest.raises(LoginRefused, match="expired"):
        run(device.poll(authorization))


def test_a_down_idp_doubles_the_interval_up_to_a_minute(
    run: Run, idp: LocalIdp, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    device, authorization = flow(run, idp, session, clock, lambda n: None)
    run(idp.stop())
    with pytest.raises(LoginRefused, match="expired"):
        run(device.poll(authorization))
    assert device.waits[:6] == [5, 10, 20, 40, 60, 60]
    assert sum(device.waits) <= authorization.expires_in


@pytest.mark.parametrize(
    "document",
    [
        {"device_code": "d", "user_code": "U", "verification_uri": "https://x", "expires_in": 0},
        {"device_code": "", "user_code": "U", "verification_uri": "https://x", "expires_in": 60},
        {"device_code": "d", "user_code": "U\n", "verification_uri": "https://x", "expires_in": 60},
        {
            "device_code": "d",
            "user_code": "U",
            "verification_uri": "javascript:x",
            "expires_in": 60,
        },
        {"device_code": "d", "user_code": "U", "verification_uri": "https://x", "expires_in": True},
        {
            "device_code": "d",
            "user_code": "U",
            "verification_uri": "https://x",
            "expires_in": 60,
            "interval": -1,
        },
    ],
)
def test_an_incomplete_device_answer_is_refused(document: dict[str, object]) -> None:
    with pytest.raises(LoginError, match="incomplete"):
        DeviceAuthorization.from_answer(_Answer(200, document))


def test_googles_verification_url_is_understood() -> None:
    document = {
        "device_code": "d",
        "user_code": "U",
        "verification_url": "https://x",
        "expires_in": 60,
    }
    assert DeviceAuthorization.from_answer(_Answer(200, document)).interval == 5


def test_an_unknown_client_is_refused_at_the_start(
    run: Run, idp: LocalIdp, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    other = client(idp, session, client_id="someone-else")
    device = DeviceFlow(
        other, run(other.discover()), scope=SCOPE, sleep=sleeper(clock), clock=clock
    )
    with pytest.raises(LoginError, match="HTTP 401, invalid_client"):
        run(device.start())


def test_discovery_must_name_the_issuer_asked_for(
    run: Run, idp: LocalIdp, session: aiohttp.ClientSession
) -> None:
    document = {"issuer": "https://evil.example", "token_endpoint": "https://evil.example/t"}
    with pytest.raises(LoginError, match="names another issuer"):
        IdpMetadata.from_document(idp.issuer, document, allow_http=True)
    plain = {"issuer": "https://idp.example", "token_endpoint": "http://idp.example/token"}
    with pytest.raises(LoginError, match="not an https URL"):
        IdpMetadata.from_document("https://idp.example", plain, allow_http=False)
    with pytest.raises(LoginError, match="https URL"):
        IdpClient(session, issuer=idp.issuer, client_id="x")  # http without --allow-http


def test_an_idp_answer_is_bounded(run: Run, session: aiohttp.ClientSession) -> None:
    """An IdP (or whoever answers in its name) cannot make the command read without limit."""

    async def huge(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()  # chunked: no Content-Length to refuse up front
        await response.prepare(request)
        for _ in range(20):
            await response.write(b" " * 8192)
        await response.write_eof()
        return response

    async def serve() -> tuple[web.AppRunner, int]:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", huge)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner, int(runner.addresses[0][1])

    runner, port = run(serve())
    try:
        idp = IdpClient(session, issuer=f"http://127.0.0.1:{port}", client_id="c", allow_http=True)
        with pytest.raises(LoginError, match="answered over 65536 bytes"):
            run(idp.discover())
    finally:
        run(runner.cleanup())
