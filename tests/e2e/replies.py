"""Reading what came back through Envoy, and building what callers send."""

from __future__ import annotations

from typing import Any

from extauthz.dev.servers import Reply


def minted(reply: Reply) -> str:
    """The one credential the echo upstream received: keymint's token."""
    assert reply.status == 200, reply.body
    received = reply.echoed()
    (authorization,) = received["authorization"]
    scheme, _, token = authorization.partition(" ")
    assert scheme == "Bearer"
    return token


def denial(reply: Reply, status: int, error: str) -> dict[str, Any]:
    """A denial the caller can read: the status, JSON, and keymint's stable reason."""
    assert reply.status == status, reply.body
    assert reply.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = reply.json()
    assert "headers" not in body  # the upstream was never reached
    assert body["error"] == error, body
    assert body["status"] == status
    return body


def tampered(token: str) -> str:
    """The same token with one signature character changed (mid-signature: every bit counts)."""
    signing_input, _, signature = token.rpartition(".")
    middle = len(signature) // 2
    flipped = "A" if signature[middle] != "A" else "B"
    return f"{signing_input}.{signature[:middle]}{flipped}{signature[middle + 1 :]}"


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}
