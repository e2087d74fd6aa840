"""Admin endpoints that drive key rotation on a running gateway (same admin token as /admin/revoke).

POST /admin/keys/publish   {"signers": {"1": "host:port", ...}}  the new group joins the JWKS
POST /admin/keys/activate                                        mint with it from now on
GET  /admin/keys                                                 the active and published kids
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from extauthz.errors import ExtAuthzError
from extauthz.http_edge import admin_refusal
from signer.coordinator import SignerEndpoint
from signer.errors import SignerError
from signer.token import kid_for

if TYPE_CHECKING:
    from extauthz.app import Gateway

NO_STORE = {"Cache-Control": "no-store"}


def add_key_routes(app: web.Application, gateway: Gateway) -> None:
    routes = _KeyRoutes(gateway)
    app.router.add_get("/admin/keys", routes.keys)
    app.router.add_post("/admin/keys/publish", routes.publish)
    app.router.add_post("/admin/keys/activate", routes.activate)


class _KeyRoutes:
    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    def _refused(self, request: web.Request) -> web.Response | None:
        return admin_refusal(request, self._gateway.settings.admin_token_sha256)

    async def keys(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        return web.json_response(self._state(), headers=NO_STORE)

    async def publish(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        try:
            endpoints = _endpoints(await request.json())
        except (ValueError, json.JSONDecodeError) as exc:
            return _error(400, "invalid_request", str(exc))
        try:
            key = await self._gateway.publish_signers(endpoints)
        except (ExtAuthzError, SignerError) as exc:
            return _error(409, "rotation_refused", str(exc))
        return web.json_response({"published": kid_for(key), **self._state()}, headers=NO_STORE)

    async def activate(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        try:
            self._gateway.activate_next_key()
        except ExtAuthzError as exc:
            return _error(409, "rotation_refused", str(exc))
        return web.json_response(self._state(), headers=NO_STORE)

    def _state(self) -> dict[str, Any]:
        ring = self._gateway.keyring
        return {
            "active": kid_for(ring.active_key),
            "keys": [kid_for(k) for k in ring.published_keys()],
        }


def _endpoints(document: object) -> list[SignerEndpoint]:
    signers = document.get("signers") if isinstance(document, dict) else None
    if not isinstance(signers, dict) or not signers:
        raise ValueError('expected {"signers": {"<id>": "host:port", ...}}')
    endpoints = []
    for identifier, address in signers.items():
        if not str(identifier).isdigit() or not isinstance(address, str) or ":" not in address:
            raise ValueError(f"signers.{identifier}: expected an id and host:port")
        endpoints.append(SignerEndpoint(int(identifier), address))
    return endpoints


def _error(status: int, error: str, description: str) -> web.Response:
    return web.json_response(
        {"error": error, "error_description": description}, status=status, headers=NO_STORE
    )
