"""Who may call `/admin/*`: the holder of the admin bearer token, whose SHA-256 the gateway is
configured with (`KEYMINT_ADMIN_TOKEN_SHA256`). Without it, the admin paths do not exist."""

from __future__ import annotations

import hashlib
import hmac
import logging

from aiohttp import web

log = logging.getLogger(__name__)


def admin_refusal(request: web.Request, expected: str | None) -> web.Response | None:
    """None when the caller holds the admin token; else the answer to give."""
    if expected is None:
        raise web.HTTPNotFound()  # the same answer as a path that does not exist
    scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
    credential = credential.strip() if scheme.lower() == "bearer" else ""
    presented = hashlib.sha256(credential.encode()).hexdigest()
    if credential and hmac.compare_digest(presented.encode(), expected.encode()):
        return None
    log.warning("admin request refused from %s: missing or wrong token", request.remote)
    return web.json_response(
        {"error": "unauthorized", "error_description": "a valid admin bearer token is needed"},
        status=401,
        headers={"WWW-Authenticate": 'Bearer realm="keymint-admin"', "Cache-Control": "no-store"},
    )
