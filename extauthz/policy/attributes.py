"""What Envoy says about a request beyond its route and headers, as a Rego policy may read it.

OPA-Envoy hands a policy the whole CheckRequest; keymint hands it these fields (addresses, the
request's scheme, protocol and body, the TLS server name), so a policy decides on exactly what the
signers are sent again (`to_json`, carried in the signing request's evidence) and on exactly what
the hot cache keys on (the object itself: frozen, hashable). Three fields identify one request or
one connection rather than describe it: the source port, Envoy's request id and the request's
time. They are empty unless the operator lets policy read them (KEYMINT_POLICY_PER_REQUEST_INPUT),
because a value that changes with every request in the cache key is a cache that never hits.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import asdict, dataclass, fields

from extauthz.errors import ExtAuthzError


class AttributesError(ExtAuthzError):
    """Request attributes that cannot be read back (evidence from a different gateway version)."""


@dataclass(frozen=True, slots=True)
class RequestAttributes:
    """Empty for requests that did not come through Envoy (RFC 8693 `/token`)."""

    source_address: str = ""
    source_port: int = 0  # per request: the client's connection
    destination_address: str = ""
    destination_port: int = 0
    destination_principal: str = ""
    request_id: str = ""  # per request: Envoy's id (x-request-id)
    request_time_seconds: int = 0  # per request: when Envoy received it
    request_time_nanos: int = 0
    scheme: str = ""
    protocol: str = ""
    size: int = 0  # the body's size as Envoy gives it (-1: unknown)
    body: str = ""  # with Envoy's with_request_body
    raw_body: bytes = b""  # with with_request_body.pack_as_bytes
    sni: str = ""  # the TLS server name the client asked for

    def to_json(self) -> bytes:
        """A JSON object of every field (`raw_body` in base64): what the signers receive."""
        document: dict[str, object] = asdict(self)
        document["raw_body"] = base64.b64encode(self.raw_body).decode()
        return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> RequestAttributes:
        """The inverse of `to_json`; empty bytes are no attributes. AttributesError on anything
        else than exactly the fields this version writes, with their types."""
        if not data:
            return NO_ATTRIBUTES
        try:
            document = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise AttributesError(f"request attributes are not JSON: {exc}") from None
        if not isinstance(document, dict):
            raise AttributesError("request attributes are not a JSON object")
        expected = {f.name: f.type for f in fields(cls)}
        if set(document) != set(expected):
            raise AttributesError(
                f"request attributes have fields {sorted(document)}, expected {sorted(expected)}"
            )
        values: dict[str, object] = {}
        for name, kind in expected.items():
            value = document[name]
            wanted = {"str": str, "int": int, "bytes": str}[str(kind)]
            if type(value) is not wanted:
                raise AttributesError(f"request attribute {name!r} is not a {kind}")
            if kind == "bytes":
                try:
                    value = base64.b64decode(str(value), validate=True)
                except binascii.Error:
                    raise AttributesError(f"request attribute {name!r} is not base64") from None
            values[name] = value
        return cls(**values)  # type: ignore[arg-type]

    def request_time(self) -> dict[str, int] | None:
        """`attributes.request.time` as opa-envoy-plugin's input has it (a Timestamp's fields)."""
        if not (self.request_time_seconds or self.request_time_nanos):
            return None
        time: dict[str, int] = {}
        if self.request_time_seconds:
            time["seconds"] = self.request_time_seconds
        if self.request_time_nanos:
            time["nanos"] = self.request_time_nanos
        return time


NO_ATTRIBUTES = RequestAttributes()
