"""Admin endpoints that drive key rotation on a running gateway (same admin token as /admin/revoke).

POST /admin/keys/publish   {"kid": "<kid>"}   t signers endorse the key; it joins the JWKS
POST /admin/keys/activate                     mint with it from now on
GET  /admin/keys                              the active, next and published kids

A rotation adds a key among the SAME signers: operators run a DKG without
--replace-existing-key (`signer dkg`), which gives every signer a share of a new group key beside
the active one. `publish` then has the coordinator re-learn the signers' keys (t must agree), asks
the signers to endorse the new key with the active key, verifies the endorsement, appends it to the
chain and persists it, and only then publishes the key. A key the signers will not endorse is
refused with 409 and the guard rule they cited. `{"kid", "jwk"}` names a key the signers did not
report (the signers still decide; they endorse only keys they hold).

Moving the key to other signer machines is a reshare (same group key, new shares), not a rotation:
nothing changes here.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from extauthz.errors import ExtAuthzError
from extauthz.server.admin_auth import admin_refusal
from extauthz.server.limits import StateUnavailable
from signer.coordinator import SigningRefused
from signer.errors import SignerError
from signer.token import kid_for

if TYPE_CHECKING:
    from extauthz.server.gateway import Gateway

NO_STORE = {"Cache-Control": "no-store"}
MAX_KID_LENGTH = 64


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
            kid, jwk = _publish_request(await request.json())
        except (ValueError, json.JSONDecodeError) as exc:
            return _error(400, "invalid_request", str(exc))
        try:
            key = await self._gateway.publish_key(kid, jwk)
        except SigningRefused as exc:
            return _error(
                409, "rotation_refused", f"the signers will not endorse {kid}: {exc}", rule=exc.rule
            )
        except StateUnavailable as exc:
            return _error(503, "temporarily_unavailable", exc.detail)
        except (ExtAuthzError, SignerError) as exc:
            return _error(409, "rotation_refused", str(exc))
        # The signers' logs show the endorsement they signed; `audit reconcile` expects this.
        await self._gateway.audit.append(
            "key_publish", {"kid": kid_for(key), "endorsed_by": self._gateway.keyring.active_kid}
        )
        return web.json_response({"published": kid_for(key), **self._state()}, headers=NO_STORE)

    async def activate(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        try:
            await self._gateway.activate_next_key()
        except StateUnavailable as exc:
            return _error(503, "temporarily_unavailable", exc.detail)
        except ExtAuthzError as exc:
            return _error(409, "rotation_refused", str(exc))
        return web.json_response(self._state(), headers=NO_STORE)

    def _state(self) -> dict[str, Any]:
        ring = self._gateway.keyring
        return {
            "active": ring.active_kid,
            "next": ring.next_kid,
            "keys": ring.published_kids(),
            "endorsements": len(ring.endorsements),
        }


def _publish_request(document: object) -> tuple[str, dict[str, Any] | None]:
    if not isinstance(document, dict) or not set(document) <= {"kid", "jwk"}:
        raise ValueError('expected {"kid": "<kid of a key the signers hold>"}')
    kid = document.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_LENGTH or not kid.isprintable():
        raise ValueError("kid: expected the RFC 7638 thumbprint of the key to publish")
    jwk = document.get("jwk")
    if jwk is not None and not isinstance(jwk, dict):
        raise ValueError("jwk: expected a JWK object")
    return kid, jwk


def _error(status: int, error: str, description: str, *, rule: str | None = None) -> web.Response:
    document = {"error": error, "error_description": description}
    if rule is not None:
        document["rule"] = rule
    return web.json_response(document, status=status, headers=NO_STORE)
