"""The gRPC edge: Envoy's Authorization/Check, health and reflection. Thin by design.

Denials are CheckResponses, never gRPC errors; the pipeline already turns anything unexpected into
a denial, and this edge adds one last net so not even a bug escapes as a gRPC error. The one gRPC
error is for a caller that is not Envoy: on an mTLS port, a certificate whose SPIFFE ID is not an
allowed client gets PERMISSION_DENIED before any service sees the call (extauthz.server.check_port).
"""

from __future__ import annotations

import logging

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from extauthz.config import CheckPort
from extauthz.policy.rego_decision import KEYMINT_METADATA
from extauthz.server.check_port import bind, registry
from extauthz.server.decision import Deny
from extauthz.server.pipeline import Pipeline
from extauthz.server.respond import to_check_response
from signer import tracing

log = logging.getLogger(__name__)

SERVICE = "envoy.service.auth.v3.Authorization"


class AuthorizationService(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline

    async def Check(
        self, request: CheckRequest, context: grpc.aio.ServicerContext
    ) -> CheckResponse:
        try:
            if tracing.enabled():  # off: one flag read, nothing else on the hot path
                return await self._traced_check(request, context)
            return await self._pipeline.check(request)
        except Exception:
            log.exception("Check failed outside the pipeline; denying")
            return to_check_response(Deny.unavailable("internal_error", "internal error"))

    async def _traced_check(
        self, request: CheckRequest, context: grpc.aio.ServicerContext
    ) -> CheckResponse:
        """The Check in a server span: the child of Envoy's ext_authz span when Envoy traces (its
        gRPC client sends the context in the call's metadata), else of the request's own
        traceparent header, else a new trace."""
        parent = tracing.context_from(
            context.invocation_metadata() or (), request.attributes.request.http.headers
        )
        with tracing.span(f"{SERVICE}/Check", server=True, parent=parent) as span:
            response = await self._pipeline.check(request)
            # .get: indexing a protobuf map would add the key to a response the hot cache shares
            keymint = response.dynamic_metadata.fields.get(KEYMINT_METADATA)
            fields = keymint.struct_value.fields if keymint is not None else {}
            tracing.annotate(
                span,
                {
                    f"keymint.{name}": value.string_value
                    for name in ("decision", "reason", "cache", "subject")
                    if (value := fields.get(name)) is not None
                },
            )
            return response


async def start_grpc(
    pipeline: Pipeline, check_port: CheckPort, *, reuse_port: bool = False
) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """Serve Check, health and reflection on `check_port`, under its rules; its TCP port or 0.

    `reuse_port`: share the port with the other workers of `extauthz serve --workers N`."""
    server = grpc.aio.server(
        options=[
            ("grpc.so_reuseport", 1 if reuse_port else 0),
            ("grpc.max_receive_message_length", 1024 * 1024),
        ]
    )
    services = registry(server, check_port)
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(
        AuthorizationService(pipeline), services
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, services)
    names = (
        external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    )
    # What reflection.enable_server_reflection does, through `services` (it would look at the
    # server's type, which `services` is not).
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
        reflection.aio.ReflectionServicer(names), services
    )
    port = bind(server, check_port)
    await server.start()
    return server, port, health_servicer


async def set_serving(
    health_servicer: health.aio.HealthServicer, serving: bool, service: str | None = None
) -> None:
    """Set `service`'s health (the Check service and "" when None)."""
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in (SERVICE, "") if service is None else (service,):
        await health_servicer.set(name, status)
