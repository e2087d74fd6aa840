"""mTLS between the coordinator and the signers, and between signers during ceremonies.

Servers demand a client certificate from the shared CA and then authorize the caller's SPIFFE ID;
clients pin the server's DNS name (its certificate's DNS SAN) per address, so the coordinator
talks only to the signer it meant to reach.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import grpc

from signer.devca import TlsFiles, dns_name, peer_spiffe_id

# Keepalives notice a dead signer within seconds instead of waiting on a TCP timeout.
CHANNEL_OPTIONS: list[tuple[str, int | str]] = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", 4 * 1024 * 1024),
]


# The server side of those keepalives: a gRPC server by default answers a client that pings more
# often than every 5 minutes without calls with GOAWAY "too_many_pings", dropping the connection
# the next mint then waits to re-establish.
SERVER_OPTIONS: list[tuple[str, int | str]] = [
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.max_receive_message_length", 4 * 1024 * 1024),
]


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    ca, cert, key = files.read()
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=True
    )


def secure_channel(
    address: str,
    files: TlsFiles,
    server_name: str,
    extra_options: Sequence[tuple[str, int | str]] = (),
) -> grpc.aio.Channel:
    """An aio channel to `address` that accepts only a certificate for `server_name`."""
    ca, cert, key = files.read()
    credentials = grpc.ssl_channel_credentials(ca, key, cert)
    options = [
        *CHANNEL_OPTIONS,
        *extra_options,
        ("grpc.ssl_target_name_override", dns_name(server_name)),
    ]
    return grpc.aio.secure_channel(address, credentials, options=options)


def peer_identity(context: grpc.aio.ServicerContext) -> str | None:
    """The SPIFFE ID of the authenticated caller, from its verified client certificate."""
    auth = context.auth_context()
    pems = auth.get("x509_pem_cert")
    if not pems:
        return None
    return peer_spiffe_id(pems[0])


async def require_peer(
    context: grpc.aio.ServicerContext,
    allowed: Collection[str],
) -> str:
    """Abort with PERMISSION_DENIED unless the caller is one of `allowed` SPIFFE IDs."""
    identity = peer_identity(context)
    if identity is None or identity not in allowed:
        await context.abort(
            grpc.StatusCode.PERMISSION_DENIED,
            f"caller {identity or 'without a SPIFFE ID'} is not authorized",
        )
        raise AssertionError("unreachable: abort raises")
    return identity
