"""What tests need of Envoy beyond the local stack's (extauthz.dev.envoy): envoy/README.md's
snippets applied to a rendered config, envoy/tracing.yaml merged in, and `envoy --mode validate`.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from extauthz.dev.envoy import CONFIG_DIR, envoy_binary, render_text

REPO = Path(__file__).resolve().parents[2]
DOCS_DIR = REPO / "envoy"  # the operator's folder: the configs and their README
# envoy/README.md's keymint_grpc cluster for a gateway on a Unix socket, and the path it names.
UNIX_CLUSTER_MARKER = "<!-- keymint_grpc over a Unix socket -->"
# envoy/README.md's ext_authz settings for Rego policies that read bodies and set headers.
REQUEST_BODY_MARKER = "<!-- ext_authz with_request_body -->"
POLICY_HEADERS_MARKER = "<!-- ext_authz policy header rules -->"
DOCUMENTED_SOCKET = "/var/run/keymint/check.sock"

__all__ = ["CONFIG_DIR", "DOCS_DIR"]


def readme_snippet(marker: str) -> str:
    """The YAML block that follows `marker` in envoy/README.md, verbatim."""
    after_marker = (DOCS_DIR / "README.md").read_text().split(marker, 1)[1]
    return after_marker.split("```yaml\n", 1)[1].split("```", 1)[0]


def unix_socket_cluster() -> str:
    """The `keymint_grpc` cluster envoy/README.md gives for the sidecar layout, verbatim."""
    return readme_snippet(UNIX_CLUSTER_MARKER)


def with_rego_settings(rendered: str) -> str:
    """A rendered envoy.yaml whose ext_authz filter has envoy/README.md's settings for Rego
    policies: `with_request_body`, and the header rules for a policy's own headers."""
    config = yaml.safe_load(rendered)
    (manager,) = [
        f
        for f in config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"]
        if f["name"] == "envoy.filters.network.http_connection_manager"
    ]
    (ext_authz,) = [
        f
        for f in manager["typed_config"]["http_filters"]
        if f["name"] == "envoy.filters.http.ext_authz"
    ]
    typed = ext_authz["typed_config"]
    typed.update(yaml.safe_load(readme_snippet(REQUEST_BODY_MARKER)))
    typed.update(yaml.safe_load(readme_snippet(POLICY_HEADERS_MARKER)))
    text: str = yaml.safe_dump(config, sort_keys=False)
    return text


TRACING = "tracing.yaml"  # an addition to envoy.yaml, not a config of its own


def with_tracing(rendered: str, **values: object) -> str:
    """A rendered envoy.yaml with envoy/tracing.yaml merged in as that file says: its `tracing:`
    block in the http_connection_manager, its cluster among the clusters."""
    addition = yaml.safe_load(render_text(TRACING, **values))
    config = yaml.safe_load(rendered)
    listener = config["static_resources"]["listeners"][0]
    (manager,) = [
        f
        for f in listener["filter_chains"][0]["filters"]
        if f["name"] == "envoy.filters.network.http_connection_manager"
    ]
    manager["typed_config"].update(addition["http_connection_manager"])
    config["static_resources"]["clusters"].extend(addition["clusters"])
    text: str = yaml.safe_dump(config, sort_keys=False)
    return text


def with_unix_check_port(rendered: str, socket: Path) -> str:
    """A rendered envoy.yaml whose keymint_grpc cluster is the documented Unix socket one, with
    the socket at `socket`."""
    snippet = unix_socket_cluster()
    assert snippet.count(DOCUMENTED_SOCKET) == 1, snippet
    (cluster,) = yaml.safe_load(snippet.replace(DOCUMENTED_SOCKET, str(socket)))
    config = yaml.safe_load(rendered)
    clusters = config["static_resources"]["clusters"]
    (index,) = [i for i, c in enumerate(clusters) if c["name"] == "keymint_grpc"]
    clusters[index] = cluster
    text: str = yaml.safe_dump(config, sort_keys=False)
    return text


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    """`envoy --mode validate -c path`: exit 0 and "OK" when Envoy accepts the config."""
    return subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "--log-level", "warn"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
