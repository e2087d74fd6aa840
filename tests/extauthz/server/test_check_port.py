"""The Check port as bound: server credentials checked at start, the allow-list interceptor, the
Unix socket's mode, and the warning of the development switch. The attacks on a running gateway
process are in tests/adversary/test_check_port.py."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2_grpc
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse
from google.rpc import status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from extauthz.cli import main
from extauthz.config import (
    CheckPort,
    CheckPortInsecure,
    CheckPortTls,
    CheckPortUnix,
    SettingsError,
)
from extauthz.server import app
from extauthz.server.check_port import AllowedClients, GuardedRegistry, bind_unix, load_credentials
from extauthz.server.grpc_edge import SERVICE, set_serving, start_grpc
from signer.devca import (
    TlsFiles,
    envoy_name,
    gateway_name,
    make_check_port_pki,
    make_dev_pki,
    spiffe_id,
)
from signer.tls import secure_channel
from tests.extauthz.configs import serving_env

OK = CheckResponse(status=status_pb2.Status(code=0))


class FakePipeline:
    """Answers every Check with OK and counts them."""

    def __init__(self) -> None:
        self.checks = 0

    async def check(self, request: CheckRequest) -> CheckResponse:
        self.checks += 1
        return OK


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TlsFiles]:
    directory = tmp_path_factory.mktemp("check-pki")
    return {**make_check_port_pki(directory / "check"), **make_dev_pki(directory / "mesh", [1])}


def tls_port(pki: dict[str, TlsFiles], **changes: Any) -> CheckPortTls:
    server = pki[gateway_name()]
    values: dict[str, Any] = {
        "address": "127.0.0.1:0",
        "cert": server.cert,
        "key": server.key,
        "client_ca": server.ca,
        "allowed_clients": frozenset({spiffe_id(envoy_name())}),
    }
    return CheckPortTls(**{**values, **changes})


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: a Unix socket path holds at most 107 bytes."""
    with tempfile.TemporaryDirectory(prefix="km-") as directory:
        yield Path(directory)


# --- server credentials -----------------------------------------------------------------------


def test_credentials_load_from_the_configured_files(pki: dict[str, TlsFiles]) -> None:
    assert isinstance(load_credentials(tls_port(pki)), grpc.ServerCredentials)


@pytest.mark.parametrize(
    ("field", "variable"),
    [
        ("cert", "KEYMINT_CHECK_TLS_CERT"),
        ("key", "KEYMINT_CHECK_TLS_KEY"),
        ("client_ca", "KEYMINT_CHECK_CLIENT_CA"),
    ],
)
def test_an_unreadable_file_names_its_setting(
    pki: dict[str, TlsFiles], tmp_path: Path, field: str, variable: str
) -> None:
    missing = tmp_path / "missing.pem"
    with pytest.raises(SettingsError) as refused:
        load_credentials(tls_port(pki, **{field: missing}))
    assert str(refused.value) == f"{variable}: cannot read {missing}: No such file or directory"


@pytest.mark.parametrize(
    ("field", "variable", "problem"),
    [
        ("cert", "KEYMINT_CHECK_TLS_CERT", "holds no PEM certificate"),
        ("client_ca", "KEYMINT_CHECK_CLIENT_CA", "holds no PEM certificate"),
        ("key", "KEYMINT_CHECK_TLS_KEY", "is not an unencrypted PEM private key"),
    ],
)
def test_a_file_that_is_not_pem_names_its_setting(
    pki: dict[str, TlsFiles], tmp_path: Path, field: str, variable: str, problem: str
) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a PEM document\n")
    with pytest.raises(SettingsError) as refused:
        load_credentials(tls_port(pki, **{field: garbage}))
    assert refused.value.variable == variable
    assert f"{garbage} {problem}" in refused.value.problem


def test_a_key_that_is_not_the_certificates_is_refused(pki: dict[str, TlsFiles]) -> None:
    port = tls_port(pki, key=pki[envoy_name()].key)
    with pytest.raises(SettingsError) as refused:
        load_credentials(port)
    assert str(refused.value) == (
        f"KEYMINT_CHECK_TLS_KEY: {port.key} is not the key of the certificate in {port.cert}"
    )


def test_serve_stops_on_a_bad_certificate_before_reaching_the_signers(
    pki: dict[str, TlsFiles],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the gateway was built despite a bad Check port certificate")

    monkeypatch.setattr(app, "build_gateway", never)
    server = pki[gateway_name()]
    for name, value in {
        **serving_env(tmp_path),
        "KEYMINT_GRPC_LISTEN": "127.0.0.1:0",
        "KEYMINT_CHECK_TLS_CERT": str(tmp_path / "nope.pem"),
        "KEYMINT_CHECK_TLS_KEY": str(server.key),
        "KEYMINT_CHECK_CLIENT_CA": str(server.ca),
        "KEYMINT_CHECK_ALLOWED_CLIENTS": spiffe_id(envoy_name()),
    }.items():
        monkeypatch.setenv(name, value)
    assert main(["serve"]) == 2
    assert capsys.readouterr().err == (
        f"extauthz serve: KEYMINT_CHECK_TLS_CERT: cannot read {tmp_path / 'nope.pem'}: "
        "No such file or directory "
        "(for example KEYMINT_CHECK_TLS_CERT=/etc/keymint/check/tls.crt)\n"
    )


# --- the mTLS port, in process ----------------------------------------------------------------


@contextlib.asynccontextmanager
async def serving(port: CheckPort) -> AsyncIterator[tuple[int, FakePipeline]]:
    pipeline = FakePipeline()
    server, bound, health = await start_grpc(pipeline, port)  # type: ignore[arg-type]
    await set_serving(health, True)
    try:
        yield bound, pipeline
    finally:
        await server.stop(None)


def test_envoy_reaches_check_and_health(pki: dict[str, TlsFiles]) -> None:
    async def scenario() -> None:
        async with serving(tls_port(pki)) as (port, pipeline):
            address = f"127.0.0.1:{port}"
            async with secure_channel(address, pki[envoy_name()], gateway_name()) as channel:
                answer = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=SERVICE), timeout=5
                )
                assert answer.status == health_pb2.HealthCheckResponse.SERVING
                stub = external_auth_pb2_grpc.AuthorizationStub(channel)
                for _ in range(3):  # the wrapped handler is reused: each call is still checked
                    assert (await stub.Check(CheckRequest(), timeout=5)).status.code == 0
            assert pipeline.checks == 3

    asyncio.run(scenario())


def test_another_identity_of_the_same_ca_is_denied_on_every_call(pki: dict[str, TlsFiles]) -> None:
    server = pki[gateway_name()]
    own = TlsFiles(server.ca, server.cert, server.key)

    async def scenario() -> None:
        async with serving(tls_port(pki)) as (port, pipeline):
            async with secure_channel(f"127.0.0.1:{port}", own, gateway_name()) as channel:
                stub = external_auth_pb2_grpc.AuthorizationStub(channel)
                for _ in range(2):
                    with pytest.raises(grpc.aio.AioRpcError) as refused:
                        await stub.Check(CheckRequest(), timeout=5)
                    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert pipeline.checks == 0

    asyncio.run(scenario())


def test_health_list_is_behind_the_same_rule(pki: dict[str, TlsFiles]) -> None:
    """grpc_health's List is a plain function (unimplemented): still checked first."""
    server = pki[gateway_name()]
    own = TlsFiles(server.ca, server.cert, server.key)
    codes = []

    async def scenario() -> None:
        async with serving(tls_port(pki)) as (port, _):
            address = f"127.0.0.1:{port}"
            for files in (own, pki[envoy_name()]):
                async with secure_channel(address, files, gateway_name()) as channel:
                    with pytest.raises(grpc.aio.AioRpcError) as failed:
                        await health_pb2_grpc.HealthStub(channel).List(
                            health_pb2.HealthListRequest(), timeout=5
                        )
                    codes.append(failed.value.code())

    asyncio.run(scenario())
    assert codes == [grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNIMPLEMENTED]


def test_an_identity_added_to_the_list_is_accepted(pki: dict[str, TlsFiles]) -> None:
    """The list is the rule: the gateway's own identity, once allowed, gets through."""
    port = tls_port(pki, allowed_clients=frozenset({spiffe_id(gateway_name())}))
    own = TlsFiles(pki[gateway_name()].ca, port.cert, port.key)

    async def scenario() -> None:
        async with serving(port) as (bound, pipeline):
            async with secure_channel(f"127.0.0.1:{bound}", own, gateway_name()) as channel:
                stub = external_auth_pb2_grpc.AuthorizationStub(channel)
                assert (await stub.Check(CheckRequest(), timeout=5)).status.code == 0
            assert pipeline.checks == 1

    asyncio.run(scenario())


def test_the_allow_list_refuses_to_be_empty() -> None:
    with pytest.raises(ValueError, match="at least one allowed identity"):
        AllowedClients(frozenset())


class RecordingServer:
    """Takes registrations as a grpc.aio.Server does, and keeps them."""

    def __init__(self) -> None:
        self.generic: list[grpc.GenericRpcHandler] = []
        self.registered: dict[str, dict[str, grpc.RpcMethodHandler]] = {}

    def add_generic_rpc_handlers(self, handlers: tuple[grpc.GenericRpcHandler, ...]) -> None:
        self.generic.extend(handlers)

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        self.registered[service] = handlers


class Refused(Exception):
    pass


@pytest.mark.parametrize("allow", [True, False])
def test_every_kind_of_behaviour_runs_only_after_the_check(allow: bool) -> None:
    """Coroutines, async generators and plain functions (grpc_health's unimplemented List is
    one) are all wrapped, registered and generic alike."""
    ran: list[str] = []

    async def authorize(context: object) -> None:
        if not allow:
            raise Refused

    async def coroutine(request: str, context: object) -> str:
        ran.append("coroutine")
        return request

    async def async_stream(request: str, context: object) -> AsyncIterator[str]:
        ran.append("async_stream")
        yield request

    def plain(request: str, context: object) -> str:
        ran.append("plain")
        return request

    def plain_stream(request: str, context: object) -> Iterator[str]:
        ran.append("plain_stream")
        yield request

    handlers = {
        "Coroutine": grpc.unary_unary_rpc_method_handler(coroutine),
        "AsyncStream": grpc.unary_stream_rpc_method_handler(async_stream),
        "Plain": grpc.unary_unary_rpc_method_handler(plain),
        "PlainStream": grpc.unary_stream_rpc_method_handler(plain_stream),
    }
    server = RecordingServer()
    guarded = GuardedRegistry(server, authorize)  # type: ignore[arg-type]
    guarded.add_registered_method_handlers("x.Y", handlers)
    guarded.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("x.Y", handlers),))
    (generic,) = server.generic
    wrapped = [
        *server.registered["x.Y"].values(),
        *(generic.service(SimpleNamespace(method=f"/x.Y/{name}")) for name in handlers),
    ]
    assert generic.service(SimpleNamespace(method="/x.Y/Nope")) is None

    async def call(handler: grpc.RpcMethodHandler) -> list[str]:
        if handler.response_streaming:
            return [item async for item in handler.unary_stream("hi", None)]
        return [await handler.unary_unary("hi", None)]

    async def scenario() -> None:
        for handler in wrapped:
            if allow:
                assert await call(handler) == ["hi"]
            else:
                with pytest.raises(Refused):
                    await call(handler)

    asyncio.run(scenario())
    expected = ["coroutine", "async_stream", "plain", "plain_stream"] * 2 if allow else []
    assert ran == expected


def test_a_generic_handler_is_wrapped_once_per_method() -> None:
    async def authorize(context: object) -> None:
        return None

    async def behaviour(request: str, context: object) -> str:
        return request

    server = RecordingServer()
    generic = grpc.method_handlers_generic_handler(
        "x.Y", {"Z": grpc.unary_unary_rpc_method_handler(behaviour)}
    )
    GuardedRegistry(server, authorize).add_generic_rpc_handlers((generic,))  # type: ignore[arg-type]
    (guarded,) = server.generic
    details = SimpleNamespace(method="/x.Y/Z")
    assert guarded.service(details) is guarded.service(details)


# --- the Unix socket --------------------------------------------------------------------------


def test_the_unix_socket_is_owner_only_and_serves_checks(short_dir: Path) -> None:
    path = short_dir / "run" / "check.sock"

    async def scenario() -> None:
        umask = os.umask(0o022)
        try:
            async with serving(CheckPortUnix(path, 0o600)) as (bound, pipeline):
                assert bound == 0
                mode = path.lstat().st_mode
                assert stat.S_ISSOCK(mode)
                assert stat.S_IMODE(mode) == 0o600
                assert os.umask(0o022) == 0o022  # the narrowed umask was put back
                async with grpc.aio.insecure_channel(f"unix:{path}") as channel:
                    stub = external_auth_pb2_grpc.AuthorizationStub(channel)
                    assert (await stub.Check(CheckRequest(), timeout=5)).status.code == 0
                assert pipeline.checks == 1
        finally:
            os.umask(umask)
        assert not path.exists()  # gRPC removes its socket on stop

    asyncio.run(scenario())


def bind_only(port: CheckPortUnix) -> None:
    async def scenario() -> None:
        server = grpc.aio.server()
        try:
            bind_unix(server, port)
        finally:
            await server.stop(None)

    asyncio.run(scenario())


def test_a_group_mode_is_applied(short_dir: Path) -> None:
    path = short_dir / "check.sock"
    modes = []

    async def scenario() -> None:
        async with serving(CheckPortUnix(path, 0o660)):
            modes.append(stat.S_IMODE(path.lstat().st_mode))

    asyncio.run(scenario())
    assert modes == [0o660]


def test_the_socket_is_never_open_wider_than_owner_only(short_dir: Path) -> None:
    """Even under a umask of 0 (a socket would be created 0777), the file gRPC creates is 0600
    from its first instant; the configured mode (here 0660) is applied after."""
    path = short_dir / "check.sock"
    at_creation: list[int] = []

    class Spy:
        def __init__(self, server: grpc.aio.Server) -> None:
            self.server = server

        def add_insecure_port(self, address: str) -> int:
            port: int = self.server.add_insecure_port(address)
            at_creation.append(stat.S_IMODE(path.lstat().st_mode))
            return port

    async def scenario() -> None:
        server = grpc.aio.server()
        previous = os.umask(0)
        try:
            bind_unix(Spy(server), CheckPortUnix(path, 0o660))  # type: ignore[arg-type]
            assert stat.S_IMODE(path.lstat().st_mode) == 0o660
            assert os.umask(0) == 0
        finally:
            os.umask(previous)
            await server.stop(None)

    asyncio.run(scenario())
    assert at_creation == [0o600]


def test_a_stale_socket_is_replaced(short_dir: Path) -> None:
    path = short_dir / "check.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # bound, never listened, closed: what a crash leaves behind
    os.chmod(path, 0o666)
    modes = []

    async def scenario() -> None:
        async with serving(CheckPortUnix(path, 0o600)):
            modes.append(stat.S_IMODE(path.lstat().st_mode))

    asyncio.run(scenario())
    assert modes == [0o600]


def test_a_socket_in_use_is_not_taken_over(short_dir: Path) -> None:
    path = short_dir / "check.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as live:
        live.bind(str(path))
        live.listen()
        with pytest.raises(SettingsError) as refused:
            bind_only(CheckPortUnix(path, 0o600))
    assert str(refused.value) == (
        f"KEYMINT_GRPC_LISTEN: {path} is in use: another process listens on it"
    )


@pytest.mark.parametrize("kind", ["file", "symlink"])
def test_a_path_that_is_not_a_socket_is_refused(short_dir: Path, kind: str) -> None:
    path = short_dir / "check.sock"
    if kind == "file":
        path.write_text("policy")
    else:
        path.symlink_to(short_dir / "elsewhere")
    with pytest.raises(SettingsError) as refused:
        bind_only(CheckPortUnix(path, 0o600))
    assert str(refused.value) == f"KEYMINT_GRPC_LISTEN: {path} exists and is not a socket"
    assert path.is_symlink() == (kind == "symlink")  # left as it was


# --- plaintext TCP, development only ----------------------------------------------------------


def test_the_dev_switch_warns_at_start(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="extauthz.server.check_port")
    ports = []

    async def scenario() -> None:
        async with serving(CheckPortInsecure("127.0.0.1:0")) as (bound, _):
            ports.append(bound)

    asyncio.run(scenario())
    (record,) = [r for r in caplog.records if r.name == "extauthz.server.check_port"]
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        f"KEYMINT_DEV_INSECURE_CHECK_PORT=true: the Check port 127.0.0.1:0 (port {ports[0]}) is "
        "plaintext TCP without client authentication; anyone who can reach it can obtain a "
        "token as any certificate holder whose certificate they have. Development only."
    )


def test_an_address_that_cannot_be_bound_names_the_setting() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"

        async def scenario() -> None:
            async with serving(CheckPortInsecure(address)):
                pass

        with pytest.raises(SettingsError) as refused:
            asyncio.run(scenario())
    assert str(refused.value) == f"KEYMINT_GRPC_LISTEN: cannot listen on {address}"
