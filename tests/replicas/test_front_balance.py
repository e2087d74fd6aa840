"""The front Envoy of extauthz.dev.replicas: envoy.yaml rendered as the single-gateway stack does,
then its keymint clusters pointed at every replica."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from extauthz.dev.envoy import check_port_values, render
from extauthz.dev.gateway import GatewayProcess
from extauthz.dev.replicas import balance_over_replicas


def replica(grpc_port: int, http_port: int) -> GatewayProcess:
    return GatewayProcess(env={}, log=Path(), grpc_port=grpc_port, http_port=http_port)


def clusters(text: str) -> dict[str, dict[str, Any]]:
    document = yaml.safe_load(text)
    return {c["name"]: c for c in document["static_resources"]["clusters"]}


def ports(cluster: dict[str, Any]) -> list[int]:
    return [
        endpoint["endpoint"]["address"]["socket_address"]["port_value"]
        for group in cluster["load_assignment"]["endpoints"]
        for endpoint in group["lb_endpoints"]
    ]


def test_the_keymint_clusters_balance_over_every_replica_and_nothing_else_changes(
    tmp_path: Path,
) -> None:
    config = render(
        "envoy.yaml",
        tmp_path,
        GATEWAY_GRPC_PORT=7001,
        GATEWAY_HTTP_PORT=8001,
        UPSTREAM_PORT=9000,
        **check_port_values(tmp_path),
    ).read_text()
    before = clusters(config)
    after = clusters(balance_over_replicas(config, [replica(7001, 8001), replica(7002, 8002)]))

    assert ports(after["keymint_grpc"]) == [7001, 7002]
    assert ports(after["keymint_http"]) == [8001, 8002]
    for name in ("keymint_grpc", "keymint_http"):
        assert after[name]["lb_policy"] == "ROUND_ROBIN"
        checks = after[name].get("health_checks", [])
        assert all(c["interval"] == "1s" and c["unhealthy_threshold"] == 1 for c in checks)
        # Only the endpoints, the policy and the checks' pace change: TLS to the Check port stays.
        keep = {"load_assignment", "lb_policy", "health_checks"}
        assert {k: v for k, v in after[name].items() if k not in keep} == {
            k: v for k, v in before[name].items() if k not in keep
        }
    assert after["keymint_grpc"]["health_checks"], "a dead replica must be noticed"
    others = set(before) - {"keymint_grpc", "keymint_http"}
    assert others, "envoy.yaml has other clusters (the upstream)"
    assert {n: after[n] for n in others} == {n: before[n] for n in others}
