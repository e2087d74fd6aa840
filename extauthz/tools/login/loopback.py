"""The loopback redirect of a native app's login (RFC 8252 section 7.3): one request, then done.

It listens on 127.0.0.1 only, on a port the OS chooses, at an unguessable path, for as long as
one login takes. The first request to that path that carries a `state` or an `error` ends the
wait (the flow then checks the state); anything else gets a 404 and changes nothing. The browser
is told to close the window; nothing it sent is logged.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Mapping

from aiohttp import web

from extauthz.tools.login.idp import LoginError

PAGE = (
    "<!doctype html><meta charset=utf-8><title>keymint</title>"
    "<p>{message} You can close this window and return to the terminal.</p>"
)


class LoopbackReceiver:
    """`async with LoopbackReceiver() as receiver:` -> `receiver.redirect_uri`, then
    `await receiver.wait(timeout)` for the redirect's query parameters."""

    def __init__(self) -> None:
        self._path = f"/callback/{secrets.token_urlsafe(12)}"
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._received: asyncio.Future[Mapping[str, str]] | None = None

    @property
    def redirect_uri(self) -> str:
        return f"http://127.0.0.1:{self._port}{self._path}"

    async def __aenter__(self) -> LoopbackReceiver:
        self._received = asyncio.get_running_loop().create_future()
        app = web.Application()
        app.router.add_get(self._path, self._callback)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def wait(self, timeout: float) -> Mapping[str, str]:
        assert self._received is not None, "use `async with`"
        try:
            return await asyncio.wait_for(asyncio.shield(self._received), timeout)
        except TimeoutError:
            raise LoginError(
                f"no sign-in came back to {self.redirect_uri} within {timeout:.0f} s"
            ) from None

    async def _callback(self, request: web.Request) -> web.Response:
        query = {key: request.query[key] for key in request.query}
        if "state" not in query and "error" not in query:
            raise web.HTTPNotFound()
        if self._received is not None and not self._received.done():
            self._received.set_result(query)
        message = "Sign-in refused." if "error" in query else "Signed in."
        return web.Response(text=PAGE.format(message=message), content_type="text/html")
