"""In-process servers and clients of the local stack, on an event loop in a background thread.

The stack's servers (the echo upstream, the stand-in issuers) must outlive any one caller's
`asyncio.run`, and the callers (tests, the demo) are synchronous: so servers live on a
`BackgroundLoop`, and callers submit their coroutines to it.
"""

from __future__ import annotations

import abc
import asyncio
import json
import socket
import ssl
import threading
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Self, TypeVar

import aiohttp
from aiohttp import web

T = TypeVar("T")


class BackgroundLoop:
    """An event loop in a daemon thread: servers live on it, tests submit coroutines to it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


class LoopbackServer(abc.ABC):
    """An aiohttp application on 127.0.0.1, on a port the OS picks at `start()`; a subclass adds
    its routes in `routes` and serves them under `path` ("" for the root)."""

    path = ""

    def __init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    @abc.abstractmethod
    def routes(self, app: web.Application) -> None:
        """Add this server's routes to `app`."""

    async def start(self) -> Self:
        app = web.Application()
        self.routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self._port = int(sock.getsockname()[1])
        await web.SockSite(self._runner, sock).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__}.start() first")
        return self._port

    @property
    def issuer(self) -> str:
        """Its base URL (with `path`): what an identity provider names as its issuer."""
        return f"http://127.0.0.1:{self.port}{self.path}"


class EchoUpstream(LoopbackServer):
    """The API behind Envoy: answers every request with what it received, as JSON."""

    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self._echo)

    async def _echo(self, request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response(
            {
                "method": request.method,
                "path": request.path_qs,
                "headers": [[k.lower(), v] for k, v in request.headers.items()],
                "body_bytes": len(body),
            }
        )


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]  # lower-case names; a repeated header keeps its last value
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def echoed(self) -> dict[str, list[str]]:
        """The headers the echo upstream received: name -> every value it saw."""
        received: dict[str, list[str]] = {}
        for name, value in self.json()["headers"]:
            received.setdefault(name, []).append(value)
        return received


async def request(
    method: str,
    url: str,
    headers: Mapping[str, str] | None,
    data: bytes | Mapping[str, str] | None,
    context: ssl.SSLContext | None,
    server_hostname: str | None,
) -> Reply:
    timeout = aiohttp.ClientTimeout(total=20)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        extra: dict[str, Any] = {}
        if context is not None:
            extra = {"ssl": context, "server_hostname": server_hostname}
        async with session.request(
            method, url, headers=dict(headers or {}), data=data, **extra
        ) as response:
            body = await response.read()
            return Reply(response.status, {k.lower(): v for k, v in response.headers.items()}, body)
