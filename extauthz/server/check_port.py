"""Who may ask for a Check: the gateway's gRPC port bound in one of its three forms.

- mTLS over TCP (`CheckPortTls`): the handshake demands a client certificate chaining to
  KEYMINT_CHECK_CLIENT_CA, so a caller without one, or with one from another CA, gets no
  connection at all; `AllowedClients` then answers PERMISSION_DENIED to every call whose
  certificate's SPIFFE ID is not in KEYMINT_CHECK_ALLOWED_CLIENTS. Every service registers through
  `GuardedRegistry`, so the rule covers Authorization, Health and reflection alike.
- a Unix socket (`CheckPortUnix`): created with the configured mode (0600 by default) before any
  peer can open it, so only the gateway's user (and with 0660 its group) can connect.
- plaintext TCP (`CheckPortInsecure`): development only; a warning at start says what it allows.

Certificate evidence is a copy of a public document: whoever can reach an open Check port can send
a victim's PEM as `source.certificate` and receive a token in that name. This module is what keeps
the port closed to everyone but Envoy.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import socket
import stat
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from extauthz.config import CheckPort, CheckPortTls, CheckPortUnix, SettingsError
from signer.devca import TlsFiles
from signer.tls import peer_identity, server_credentials

log = logging.getLogger(__name__)


def load_credentials(port: CheckPortTls) -> grpc.ServerCredentials:
    """The server's certificate and key, and the CA client certificates must chain to.

    Each file is read and parsed here, at start, so a wrong path or a key that does not belong to
    the certificate stops the gateway naming the setting, instead of failing every handshake.
    """
    chain = _read(port.cert, "KEYMINT_CHECK_TLS_CERT")
    key = _read(port.key, "KEYMINT_CHECK_TLS_KEY")
    ca = _read(port.client_ca, "KEYMINT_CHECK_CLIENT_CA")
    leaf = _certificates(chain, "KEYMINT_CHECK_TLS_CERT", port.cert)[0]
    _certificates(ca, "KEYMINT_CHECK_CLIENT_CA", port.client_ca)
    try:
        private_key = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError) as exc:
        raise SettingsError(
            "KEYMINT_CHECK_TLS_KEY", f"{port.key} is not an unencrypted PEM private key ({exc})"
        ) from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if private_key.public_key().public_bytes(
        serialization.Encoding.DER, public
    ) != leaf.public_key().public_bytes(serialization.Encoding.DER, public):
        raise SettingsError(
            "KEYMINT_CHECK_TLS_KEY",
            f"{port.key} is not the key of the certificate in {port.cert}",
        )
    return server_credentials(TlsFiles(ca=port.client_ca, cert=port.cert, key=port.key))


def _read(path: Path, variable: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SettingsError(variable, f"cannot read {path}: {exc.strerror}") from None


def _certificates(pem: bytes, variable: str, path: Path) -> list[x509.Certificate]:
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise SettingsError(variable, f"{path} holds no PEM certificate") from None
    return certificates


class AllowedClients:
    """PERMISSION_DENIED for any call whose verified client certificate is not an allowed ID.

    The handshake has already verified the chain; what remains is one question per call: is the
    certificate's SPIFFE ID one of Envoy's? `signer.tls.peer_identity` answers it from the TLS
    auth context and parses each distinct certificate only once (its cache), so a call costs a
    read of the connection's auth context and a set lookup.
    """

    def __init__(self, allowed: Collection[str]) -> None:
        if not allowed:
            raise ValueError("AllowedClients needs at least one allowed identity")
        self._allowed = frozenset(allowed)
        self._refused: set[str | None] = set()

    async def authorize(self, context: grpc.aio.ServicerContext) -> None:
        identity = peer_identity(context)
        if identity in self._allowed:
            return
        if identity not in self._refused and len(self._refused) < 1000:
            self._refused.add(identity)  # logged once per identity: a refused client may retry
            log.warning(
                "Check port: refused a client certificate with %s: not in "
                "KEYMINT_CHECK_ALLOWED_CLIENTS",
                f"SPIFFE ID {identity}" if identity else "no single SPIFFE ID",
            )
        await context.abort(
            grpc.StatusCode.PERMISSION_DENIED,
            f"{identity or 'a certificate without one SPIFFE ID'} is not an Envoy identity "
            f"this gateway accepts Checks from",
        )


Authorize = Callable[[grpc.aio.ServicerContext], Awaitable[None]]


class GuardedRegistry:
    """Stands in for the server while services register: every handler they add is wrapped so
    that `authorize` runs before its behaviour.

    The wrapping is done once, at registration; a call pays for the check itself (bench-check
    reports it) and one coroutine frame, not for a server interceptor's lookup on every call.
    A registration this class does not know fails with AttributeError at start, never as an open
    method.
    """

    def __init__(self, server: grpc.aio.Server, authorize: Authorize) -> None:
        self._server = server
        self._authorize = authorize

    def add_generic_rpc_handlers(self, generic_handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(
            tuple(_GuardedGenericHandler(h, self._authorize) for h in generic_handlers)
        )

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: Mapping[str, grpc.RpcMethodHandler]
    ) -> None:
        self._server.add_registered_method_handlers(
            service_name,
            {name: _guarded(h, self._authorize) for name, h in method_handlers.items()},
        )


class _GuardedGenericHandler(grpc.GenericRpcHandler):  # type: ignore[misc]
    def __init__(self, inner: grpc.GenericRpcHandler, authorize: Authorize) -> None:
        self._inner = inner
        self._authorize = authorize
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = self._inner.service(details)
        if handler is None:
            return None
        method: str = details.method
        cached = self._wrapped.get(method)
        if cached is None or cached[0] is not handler:
            cached = (handler, _guarded(handler, self._authorize))
            self._wrapped[method] = cached
        return cached[1]


def _guarded(handler: grpc.RpcMethodHandler, authorize: Authorize) -> grpc.RpcMethodHandler:
    """The same handler, with `authorize` awaited before its behaviour runs.

    A synchronous behaviour (grpc_health's unimplemented `List`, for one) is called on the event
    loop once the check has passed, as an asynchronous one would be awaited.
    """
    kinds = {
        (False, False): ("unary_unary", grpc.unary_unary_rpc_method_handler),
        (False, True): ("unary_stream", grpc.unary_stream_rpc_method_handler),
        (True, False): ("stream_unary", grpc.stream_unary_rpc_method_handler),
        (True, True): ("stream_stream", grpc.stream_stream_rpc_method_handler),
    }
    attribute, make = kinds[(handler.request_streaming, handler.response_streaming)]
    behaviour = getattr(handler, attribute)
    guarded: Callable[..., Any]
    if inspect.isasyncgenfunction(behaviour):

        async def guarded_stream(
            request: Any, context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            await authorize(context)
            async for item in behaviour(request, context):
                yield item

        guarded = guarded_stream
    elif inspect.iscoroutinefunction(behaviour):

        async def guarded_call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await authorize(context)
            return await behaviour(request, context)

        guarded = guarded_call
    elif handler.response_streaming:

        async def guarded_sync_stream(
            request: Any, context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            await authorize(context)
            for item in behaviour(request, context):
                yield item

        guarded = guarded_sync_stream
    else:

        async def guarded_sync_call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await authorize(context)
            return behaviour(request, context)

        guarded = guarded_sync_call
    result: grpc.RpcMethodHandler = make(
        guarded,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
    return result


def preflight(port: CheckPort) -> None:
    """The checks `bind` makes, before the slow part of a start (reaching the signers)."""
    if isinstance(port, CheckPortTls):
        load_credentials(port)
    elif isinstance(port, CheckPortUnix):
        _free_socket_path(port)


def registry(server: grpc.aio.Server, port: CheckPort) -> grpc.aio.Server | GuardedRegistry:
    """Where services register: on an mTLS port, behind the allow-list of Envoy identities."""
    if isinstance(port, CheckPortTls):
        return GuardedRegistry(server, AllowedClients(port.allowed_clients).authorize)
    return server


def bind(server: grpc.aio.Server, port: CheckPort) -> int:
    """Add the Check port to `server` (services registered through `registry`); its TCP port,
    or 0 for a Unix socket."""
    if isinstance(port, CheckPortTls):
        credentials = load_credentials(port)
        bound = _bound(port.address, lambda: server.add_secure_port(port.address, credentials))
        log.info(
            "Check port: mTLS on %s (port %d), clients %s",
            port.address,
            bound,
            ", ".join(sorted(port.allowed_clients)),
        )
        return bound
    if isinstance(port, CheckPortUnix):
        bind_unix(server, port)
        log.info("Check port: Unix socket %s, mode %04o", port.path, port.mode)
        return 0
    bound = _bound(port.address, lambda: server.add_insecure_port(port.address))
    log.warning(
        "KEYMINT_DEV_INSECURE_CHECK_PORT=true: the Check port %s (port %d) is plaintext TCP "
        "without client authentication; anyone who can reach it can obtain a token as any "
        "certificate holder whose certificate they have. Development only.",
        port.address,
        bound,
    )
    return bound


def _bound(address: str, add_port: Callable[[], int]) -> int:
    try:
        bound = add_port()
    except RuntimeError:  # gRPC's "Failed to bind", with the reason only in its own log
        bound = 0
    if bound == 0:
        raise SettingsError("KEYMINT_GRPC_LISTEN", f"cannot listen on {address}")
    return bound


def bind_unix(server: grpc.aio.Server, port: CheckPortUnix) -> None:
    """Create the socket with no more than owner read/write, then give it the configured mode.

    The umask is narrowed while gRPC creates the file, so at no instant can another user open it.
    A stale socket left by a crash is replaced; a socket some process still answers on, or a path
    that is not a socket, stops the start.
    """
    path = _free_socket_path(port)
    previous = os.umask(0o177)
    try:
        _bound(f"unix:{path}", lambda: server.add_insecure_port(f"unix:{path}"))
    finally:
        os.umask(previous)
    os.chmod(path, port.mode)


def _free_socket_path(port: CheckPortUnix) -> Path:
    path = port.path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SettingsError(
            "KEYMINT_GRPC_LISTEN", f"cannot create {path.parent}: {exc.strerror}"
        ) from None
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise SettingsError("KEYMINT_GRPC_LISTEN", f"{path} exists and is not a socket")
        if _answers(path):
            raise SettingsError(
                "KEYMINT_GRPC_LISTEN", f"{path} is in use: another process listens on it"
            )
    return path


def _answers(path: Path) -> bool:
    with contextlib.closing(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
        return True
