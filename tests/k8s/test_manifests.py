"""k8s/: valid for a pinned Kubernetes schema, lint-clean, and as hardened as k8s/README.md says.

Offline: kubernetes-validate bundles the Kubernetes JSON schemas, yamllint is a library. Beyond the
schema, the checks read the manifests the way the cluster and keymint will: pod security for every
container, the probes, the signers' placement, which pods each NetworkPolicy admits, the
PodDisruptionBudgets, and the settings each container ends up with, parsed by keymint's own
`from_env` functions.
"""

from __future__ import annotations

import copy
import importlib.resources
import json
import re
import string
import tomllib
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate
import pytest
import yaml
from yamllint import linter
from yamllint.config import YamlLintConfig

from extauthz.config import CheckPortTls, GatewaySettings
from signer.devca import envoy_name, gateway_name, spiffe_id
from signer.server import SignerSettings
from signer.vault.config import Pkcs11Config, parse_vault_config
from tests.conftest import REPO

K8S = REPO / "k8s"
YUBIHSM = K8S / "components" / "yubihsm"
# The Kubernetes version the manifests are validated against; k8s/README.md names it.
KUBERNETES_VERSION = "1.33.0"
UID = 10001
NAMESPACE = "keymint"
IMAGES = {
    "ghcr.io/keymint/keymint:0.1.0",
    "envoyproxy/envoy:v1.40.0",
    "redis:7.4-alpine",
}
# Pod Security Standards "restricted": the only volume types it allows.
RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
# Environment variables in the manifests that no keymint settings parser reads, and why.
HELPER_ENV = {
    "YUBIHSM_PKCS11_CONF": "read by Yubico's PKCS#11 module",
}
SETTINGS_SOURCES = [
    REPO / "extauthz" / "config.py",
    REPO / "signer" / "server.py",
    REPO / "signer" / "redisconn.py",  # Redis, for the gateway and the signers alike
    REPO / "signer" / "vault" / "config.py",
    REPO / "extauthz" / "guard_checker.py",  # the signers' evidence checker reads its own few
]
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"
# Stand-ins for the Secrets the operator creates (k8s/README.md), "name/key": value.
SECRETS = {
    "keymint-admin/token-sha256": "ab" * 32,
    "keymint-redis/gateway-credentials": "gateway:" + "0123456789abcdef" * 4,
    "keymint-redis/signer-credentials": "signer:" + "fedcba9876543210" * 4,
    "keymint-signer-pkcs11/pin": "1234",
}

# ----------------------------------------------------------------------------------------------
# Loading


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


@cache
def kustomization() -> dict[str, Any]:
    (doc,) = _documents(K8S / "kustomization.yaml")
    return doc


@cache
def _objects() -> tuple[dict[str, Any], ...]:
    return tuple(doc for path in manifest_files() for doc in _documents(path))


def objects(kind: str | None = None) -> list[dict[str, Any]]:
    """Fresh copies of the base objects (tests may change them)."""
    return [copy.deepcopy(o) for o in _objects() if kind is None or o["kind"] == kind]


def find(kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in objects(kind) if o["metadata"]["name"] == name]
    return found


def strategic_merge(base: Any, patch: Any) -> Any:
    """The part of Kubernetes' strategic merge the component uses: maps merge, lists of named
    maps merge by name (the patch's items first, as kustomize orders them, which matters for
    $(VAR) references in env), anything else is replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            merged[key] = strategic_merge(base[key], value) if key in base else value
        return merged
    named = isinstance(base, list) and isinstance(patch, list)
    if named and all(isinstance(item, dict) and "name" in item for item in [*base, *patch]):
        old = {item["name"]: item for item in base}
        patched = [strategic_merge(old[i["name"]], i) if i["name"] in old else i for i in patch]
        names = {item["name"] for item in patch}
        return [*patched, *(item for item in base if item["name"] not in names)]
    return patch


def yubihsm_signer() -> dict[str, Any]:
    """The signer StatefulSet with the YubiHSM component's patch applied."""
    (patch,) = _documents(YUBIHSM / "signer-yubihsm.yaml")
    base = find("StatefulSet", "keymint-signer")
    assert patch["metadata"]["name"] == base["metadata"]["name"]
    return strategic_merge(base, patch)


def workloads(*, with_components: bool = True) -> list[dict[str, Any]]:
    found = objects("Deployment") + objects("StatefulSet")
    if with_components:
        found.append(yubihsm_signer())
    return found


def workload_id(workload: dict[str, Any]) -> str:
    spec = workload["spec"]["template"]["spec"]
    extra = "+yubihsm" if spec.get("initContainers") and workload["kind"] == "StatefulSet" else ""
    return f"{workload['kind']}/{workload['metadata']['name']}{extra}"


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def container(workload: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in containers(pod_spec(workload)) if c["name"] == name]
    return found


def port_number(c: dict[str, Any], name: str) -> int:
    (found,) = [p["containerPort"] for p in c.get("ports", []) if p["name"] == name]
    return int(found)


def gateway() -> dict[str, Any]:
    return find("Deployment", "keymint-gateway")


def signers() -> dict[str, Any]:
    return find("StatefulSet", "keymint-signer")


def envoy() -> dict[str, Any]:
    return find("Deployment", "keymint-envoy")


def redis() -> dict[str, Any]:
    return find("Deployment", "keymint-redis")


def configmap_data(name: str) -> dict[str, str]:
    extra = _documents(YUBIHSM / "yubihsm-config.yaml")
    (found,) = [o for o in [*objects("ConfigMap"), *extra] if o["metadata"]["name"] == name]
    data: dict[str, str] = found["data"]
    return data


def container_env(
    c: dict[str, Any], *, pod_labels: Mapping[str, str], secrets: Mapping[str, str]
) -> dict[str, str]:
    """The environment the kubelet gives a container: envFrom ConfigMaps, then env with $(VAR)
    expanded; Secret values come from `secrets` ("name/key"), pod labels from `pod_labels`."""
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        env.update(configmap_data(source["configMapRef"]["name"]))
    for item in c.get("env", []):
        if "value" in item:
            env[item["name"]] = re.sub(
                r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                lambda m: env.get(m.group(1), m.group(0)),
                item["value"],
            )
            continue
        source = item["valueFrom"]
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            env[item["name"]] = secrets[f"{ref['name']}/{ref['key']}"]
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            env[item["name"]] = configmap_data(ref["name"])[ref["key"]]
        else:
            path = source["fieldRef"]["fieldPath"]
            label = re.fullmatch(r"metadata\.labels\['([^']+)'\]", path)
            assert label is not None, f"{item['name']}: unsupported fieldRef {path}"
            env[item["name"]] = pod_labels[label.group(1)]
    return env


def mounts(c: dict[str, Any]) -> dict[str, str]:
    return {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}


def volumes(workload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in pod_spec(workload).get("volumes", [])}


def mounted_volume(workload: dict[str, Any], c: dict[str, Any], path: str) -> dict[str, Any]:
    """The volume a container has mounted at `path` or at a parent of it."""
    candidates = [
        (mount_path, name)
        for mount_path, name in mounts(c).items()
        if PurePosixPath(path) == PurePosixPath(mount_path)
        or PurePosixPath(mount_path) in PurePosixPath(path).parents
    ]
    assert candidates, f"{c['name']}: nothing mounted over {path}"
    _, name = max(candidates, key=lambda candidate: len(candidate[0]))
    templates = {t["metadata"]["name"]: t for t in workload["spec"].get("volumeClaimTemplates", [])}
    if name in templates:
        return {"name": name, "volumeClaimTemplate": templates[name]}
    return volumes(workload)[name]


def selects(selector: dict[str, Any], labels: Mapping[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels and matchExpressions)."""
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values")
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def policies_for(labels: Mapping[str, str]) -> list[dict[str, Any]]:
    return [p for p in objects("NetworkPolicy") if selects(p["spec"]["podSelector"], labels)]


def rules(labels: Mapping[str, str], direction: str) -> Iterator[dict[str, Any]]:
    for policy in policies_for(labels):
        yield from policy["spec"].get(direction, [])


def envoy_placeholders(text: str) -> set[str]:
    return {
        m.group("braced") or m.group("named")
        for m in string.Template.pattern.finditer(text)
        if m.group("braced") or m.group("named")
    }


# ----------------------------------------------------------------------------------------------
# Schema and lint


def test_the_pinned_schema_is_bundled() -> None:
    # validate() silently falls back to an older schema for a version it lacks: make sure the
    # pinned one is really there, strict variant included.
    schemas = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"
    assert (schemas / f"v{KUBERNETES_VERSION}-local-strict").is_dir()


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: p.name)
def test_manifest_is_valid_kubernetes(path: Path) -> None:
    documents = _documents(path)
    assert documents, f"{path.name} holds no objects"
    for doc in documents:
        used = kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        assert used == KUBERNETES_VERSION.rsplit(".", 1)[0]
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]["name"]


def test_yubihsm_component_is_valid_kubernetes() -> None:
    """`validate` raises on an invalid document (test_strict_validation_catches_mistakes)."""
    documents = [yubihsm_signer(), *_documents(YUBIHSM / "yubihsm-config.yaml")]
    assert len(documents) >= 2
    for doc in documents:
        used = kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        assert used == KUBERNETES_VERSION.rsplit(".", 1)[0]


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d["spec"].update(replica=3),
        lambda d: pod_spec(d)["containers"][0]["securityContext"].update(runAsRoot=False),
        lambda d: pod_spec(d)["containers"][0]["readinessProbe"]["httpGet"].update(port=[]),
    ],
    ids=["misspelt-field", "unknown-nested-field", "wrong-type"],
)
def test_strict_validation_catches_mistakes(mutate: Any) -> None:
    # The validator is not vacuous: a misspelt or unknown field anywhere is an error.
    broken = gateway()
    mutate(broken)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_yamllint_is_clean() -> None:
    config = YamlLintConfig(file=str(K8S / ".yamllint"))
    files = [*sorted(K8S.rglob("*.yaml")), K8S / ".yamllint"]
    problems = [
        f"{path.relative_to(REPO)}:{problem.line}:{problem.column}: {problem.level}: "
        f"{problem.desc} ({problem.rule})"
        for path in files
        for problem in linter.run(path.read_text(), config, str(path))
    ]
    assert problems == []


def test_kustomization_lists_every_manifest() -> None:
    listed = kustomization()["resources"]
    assert len(listed) == len(set(listed))
    assert set(listed) == {p.name for p in manifest_files()}
    assert kustomization()["namespace"] == NAMESPACE


def test_kustomization_generators_read_existing_files() -> None:
    generated = {g["name"]: g for g in kustomization()["configMapGenerator"]}
    assert set(generated) == {"keymint-envoy-config", "keymint-policy"}
    assert generated["keymint-envoy-config"]["files"] == ["envoy.yaml=../envoy/envoy.yaml"]
    for generator in generated.values():
        for entry in generator["files"]:
            _, _, source = entry.rpartition("=")
            assert (K8S / source).is_file(), f"{generator['name']}: {source} is missing"


def test_yubihsm_component_files_exist() -> None:
    (component,) = _documents(YUBIHSM / "kustomization.yaml")
    assert component["kind"] == "Component"
    for name in [*component["resources"], *(p["path"] for p in component["patches"])]:
        assert (YUBIHSM / name).is_file()
    # Offered, not on by default: the base is the network-HSM (PKCS#11) setup.
    assert "components" not in kustomization()
    assert "components/yubihsm" in (K8S / "kustomization.yaml").read_text()


# ----------------------------------------------------------------------------------------------
# Pod security


def test_namespace_enforces_the_restricted_pod_security_standard() -> None:
    labels = find("Namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_every_workload_is_checked() -> None:
    names = {workload_id(w) for w in workloads()}
    assert names == {
        "Deployment/keymint-gateway",
        "Deployment/keymint-envoy",
        "Deployment/keymint-redis",
        "StatefulSet/keymint-signer",
        "StatefulSet/keymint-signer+yubihsm",
    }


@pytest.mark.parametrize("workload", workloads(), ids=workload_id)
def test_pod_is_hardened(workload: dict[str, Any]) -> None:
    pod = pod_spec(workload)
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    assert pod["serviceAccountName"].startswith("keymint-")
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(host), host
    context = pod["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] == UID
    assert context["runAsGroup"] == UID
    assert context["fsGroup"] == UID
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        assert kinds <= RESTRICTED_VOLUMES, f"volume {volume['name']}: {kinds}"


@pytest.mark.parametrize("workload", workloads(), ids=workload_id)
def test_every_container_is_hardened(workload: dict[str, Any]) -> None:
    pod = pod_spec(workload)
    for c in containers(pod):
        where = f"{workload_id(workload)} container {c['name']}"
        context = c["securityContext"]
        # The container's own settings win over the pod's: both must say the same.
        effective = {**pod["securityContext"], **context}
        assert effective["runAsNonRoot"] is True, where
        assert effective["runAsUser"] == UID, where
        assert effective["runAsGroup"] == UID, where
        assert effective["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert context["readOnlyRootFilesystem"] is True, where
        assert context["allowPrivilegeEscalation"] is False, where
        assert context.get("privileged", False) is False, where
        assert context["capabilities"] == {"drop": ["ALL"]}, where
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][bound]), f"{where}: {bound}"
        image = c["image"]
        assert "@sha256:" in image or re.search(r":[\w.-]+$", image.rsplit("/", 1)[-1]), where
        assert not image.endswith(":latest"), where
        assert c.get("imagePullPolicy") == "IfNotPresent", where


@pytest.mark.parametrize("workload", workloads(), ids=workload_id)
def test_writable_paths_are_volumes(workload: dict[str, Any]) -> None:
    # A read-only root filesystem everywhere: /tmp must be a volume wherever Python or Envoy
    # runs for long; Redis writes only /data.
    for c in pod_spec(workload)["containers"]:
        expected = "/data" if c["name"] == "redis" else "/tmp"
        volume = mounted_volume(workload, c, expected)
        assert "emptyDir" in volume, f"{c['name']}: {expected}"


def test_the_images_are_the_pinned_ones() -> None:
    base = {c["image"] for w in workloads(with_components=False) for c in containers(pod_spec(w))}
    assert base == IMAGES
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert f"ghcr.io/keymint/keymint:{version}" in base


def test_container_ports_are_exposed_by_the_image() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    exposed = {
        int(p) for line in re.findall(r"^EXPOSE (.+)$", dockerfile, re.M) for p in line.split()
    }
    keymint_ports = {
        int(p["containerPort"])
        for w in (gateway(), signers())
        for c in pod_spec(w)["containers"]
        for p in c["ports"]
    }
    assert keymint_ports <= exposed


# ----------------------------------------------------------------------------------------------
# The gateway


def test_gateway_runs_three_replicas_spread_over_nodes() -> None:
    deployment = gateway()
    assert deployment["spec"]["replicas"] == 3
    spread = pod_spec(deployment)["topologySpreadConstraints"]
    by_key = {s["topologyKey"]: s for s in spread}
    assert by_key["kubernetes.io/hostname"]["whenUnsatisfiable"] == "DoNotSchedule"
    assert "topology.kubernetes.io/zone" in by_key
    for constraint in spread:
        assert selects(constraint["labelSelector"], pod_labels(deployment))
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_gateway_probes() -> None:
    c = container(gateway(), "gateway")
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    # The HTTP listener starts after the key is learned and the Check port is up.
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    # The Check port accepts only Envoy's client certificate: a kubelet probe (which has none)
    # on it would fail forever, so none is aimed at it.
    for name in ("startupProbe", "livenessProbe", "readinessProbe"):
        probe = c[name]
        assert "grpc" not in probe, name
        target = next(iter(v for k, v in probe.items() if k in ("httpGet", "tcpSocket")))
        assert target["port"] in ("http", port_number(c, "http")), name


def test_gateway_settings_parse_and_match_the_pod() -> None:
    deployment = gateway()
    c = container(deployment, "gateway")
    env = container_env(c, pod_labels=pod_labels(deployment), secrets=SECRETS)
    settings = GatewaySettings.from_env(env)
    assert c["command"] + c["args"] == ["extauthz", "serve"]
    assert int(settings.grpc_listen.rpartition(":")[2]) == port_number(c, "grpc")
    # The Check port is mTLS, its files from the Secret the README has the operator create, and
    # it accepts Envoy's identity only.
    check = settings.check_port
    assert isinstance(check, CheckPortTls)
    for path in (check.cert, check.key, check.client_ca):
        volume = mounted_volume(deployment, c, str(path))
        assert volume["secret"]["secretName"] == "keymint-gateway-check-tls"
    assert check.allowed_clients == {spiffe_id(envoy_name())}
    assert int(settings.http_listen.rpartition(":")[2]) == port_number(c, "http")
    assert settings.admin_token_sha256 == SECRETS["keymint-admin/token-sha256"]
    assert (settings.frost_n, settings.frost_t) == (3, 2)
    # The coordinator's certificate comes from its Secret, at KEYMINT_TLS_DIR.
    tls = mounted_volume(deployment, c, str(settings.tls_dir / "coordinator.pem"))
    assert tls["secret"]["secretName"] == "keymint-coordinator-tls"
    # The audit log and /tmp are emptyDirs (the root filesystem is read-only).
    assert "emptyDir" in mounted_volume(deployment, c, str(settings.audit_log))
    policy = mounted_volume(deployment, c, str(settings.policy_file))
    assert policy["configMap"]["name"] == "keymint-policy"
    for bundle in settings.spiffe_bundles.values():
        assert mounted_volume(deployment, c, str(bundle))["configMap"]["name"] == (
            "keymint-spiffe-bundle"
        )


def test_gateway_uses_the_redis_service() -> None:
    deployment = gateway()
    c = container(deployment, "gateway")
    env = container_env(c, pod_labels=pod_labels(deployment), secrets=SECRETS)
    url = GatewaySettings.from_env(env).redis_url
    assert url is not None
    service = find("Service", "keymint-redis")
    (port,) = service["spec"]["ports"]
    assert url == f"redis://keymint-redis.{NAMESPACE}.svc.cluster.local:{port['port']}/0"
    # The password is in a file from the Secret, never in the environment.
    credentials = env["KEYMINT_REDIS_CREDENTIALS_FILE"]
    volume = mounted_volume(deployment, c, credentials)
    assert volume["secret"]["secretName"] == "keymint-redis"
    assert [i["key"] for i in volume["secret"]["items"]] == ["gateway-credentials"]
    assert not any("password" in value.lower() for value in env.values() if "://" in value)
    assert selects({"matchLabels": service["spec"]["selector"]}, pod_labels(redis()))
    assert port_number(container(redis(), "redis"), port["targetPort"]) == 6379


def test_policy_scopes_are_allowed() -> None:
    # The shipped configuration can mint something: every scope the generated policy grants
    # passes ALLOWED_SCOPES.
    (generator,) = [
        g for g in kustomization()["configMapGenerator"] if g["name"] == "keymint-policy"
    ]
    (entry,) = generator["files"]
    policy = json.loads((K8S / entry.partition("=")[2]).read_text())
    granted = {scope for role in policy["roles"].values() for scope in role["scopes"]}
    allowed = set(configmap_data("keymint-config")["ALLOWED_SCOPES"].split())
    assert granted <= allowed


# ----------------------------------------------------------------------------------------------
# The signers


def test_signers_are_a_parallel_statefulset_of_three_from_ordinal_one() -> None:
    statefulset = signers()
    spec = statefulset["spec"]
    assert spec["replicas"] == 3
    assert spec["podManagementPolicy"] == "Parallel"
    # FROST identifiers are 1..n; the pod index label is the identifier.
    assert spec["ordinals"]["start"] == 1
    assert spec["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }
    c = container(statefulset, "signer")
    assert c["command"] == ["signer", "serve"]


def test_signers_never_share_a_node() -> None:
    statefulset = signers()
    anti = pod_spec(statefulset)["affinity"]["podAntiAffinity"]
    required = anti["requiredDuringSchedulingIgnoredDuringExecution"]
    assert any(
        term["topologyKey"] == "kubernetes.io/hostname"
        and selects(term["labelSelector"], pod_labels(statefulset))
        and not term.get("namespaces")
        for term in required
    )


@pytest.mark.parametrize("ordinal", [1, 2, 3])
def test_signer_settings_parse_for_each_pod(ordinal: int) -> None:
    statefulset = signers()
    c = container(statefulset, "signer")
    labels = {**pod_labels(statefulset), POD_INDEX_LABEL: str(ordinal)}
    env = container_env(c, pod_labels=labels, secrets=SECRETS)
    settings = SignerSettings.from_env(env)
    assert settings.identifier == ordinal
    assert int(settings.listen.rpartition(":")[2]) == port_number(c, "signer")
    assert settings.tls.cert.name == f"signer-{ordinal}.pem"
    tls = mounted_volume(statefulset, c, str(settings.tls.cert))
    assert tls["secret"]["secretName"] == "keymint-signer-tls"
    # The sealed share and the audit log are on the signer's own PersistentVolume.
    for path in (settings.share_file, settings.package_file, settings.keys_dir, settings.audit_log):
        assert "volumeClaimTemplate" in mounted_volume(statefulset, c, str(path))
    vault = parse_vault_config(env)
    assert isinstance(vault, Pkcs11Config)
    assert vault.label == f"signer-{ordinal}"
    assert vault.token_label == f"keymint-signer-{ordinal}"
    assert vault.module.startswith("/")
    pin = [e for e in c["env"] if e["name"] == "KEYMINT_PKCS11_PIN"]
    assert pin == [
        {
            "name": "KEYMINT_PKCS11_PIN",
            "valueFrom": {"secretKeyRef": {"name": "keymint-signer-pkcs11", "key": "pin"}},
        }
    ]
    # Key ceremonies come from the operator's identity only, not the gateway's coordinator.
    assert settings.operator_ids == {spiffe_id("operator")}
    assert settings.coordinator_id not in settings.operator_ids
    assert not settings.allow_trusted_dealer
    # The guard's evidence checker reads the gateway's settings in the signer process.
    checker = GatewaySettings.from_env(env)
    # The least threshold this signer lets a key have is the deployment's t, the gateway's own.
    deployment = gateway()
    gateway_env = container_env(
        container(deployment, "gateway"), pod_labels=pod_labels(deployment), secrets=SECRETS
    )
    assert settings.min_threshold == GatewaySettings.from_env(gateway_env).frost_t == 2
    assert mounted_volume(statefulset, c, str(checker.policy_file))["configMap"]["name"] == (
        "keymint-policy"
    )


def test_yubihsm_component_points_the_vault_at_the_connector() -> None:
    statefulset = yubihsm_signer()
    c = container(statefulset, "signer")
    labels = {**pod_labels(statefulset), POD_INDEX_LABEL: "2"}
    env = container_env(c, pod_labels=labels, secrets=SECRETS)
    vault = parse_vault_config(env)
    assert isinstance(vault, Pkcs11Config)
    assert vault.module.endswith("/yubihsm_pkcs11.so")
    assert vault.token_label == "YubiHSM"
    conf = env["YUBIHSM_PKCS11_CONF"]
    volume = mounted_volume(statefulset, c, conf)
    connector_url = configmap_data(volume["configMap"]["name"])[PurePosixPath(conf).name]
    sidecar = container(statefulset, "yubihsm-connector")
    assert sidecar["restartPolicy"] == "Always"  # a native sidecar: up before the signer
    listen = sidecar["args"][sidecar["args"].index("--listen") + 1]
    assert listen.startswith("127.0.0.1:")  # loopback only
    assert f"connector = http://{listen}" in connector_url
    assert not sidecar.get("ports")


def test_signer_addresses_are_the_statefulset_pods() -> None:
    statefulset = signers()
    spec = statefulset["spec"]
    config = configmap_data("keymint-config")
    settings = GatewaySettings.from_env({**config, "POLICY_FILE": "/p", "KEYMINT_ISSUER": "x"})
    port = port_number(container(statefulset, "signer"), "signer")
    service = find("Service", spec["serviceName"])
    assert service["spec"]["clusterIP"] == "None"
    assert selects({"matchLabels": service["spec"]["selector"]}, pod_labels(statefulset))
    start = spec["ordinals"]["start"]
    name = statefulset["metadata"]["name"]
    assert [(s.identifier, s.address) for s in settings.signers] == [
        (i, f"{name}-{i}.{spec['serviceName']}.{NAMESPACE}.svc.cluster.local:{port}")
        for i in range(start, start + spec["replicas"])
    ]
    assert settings.frost_n == spec["replicas"]


def test_manifest_environment_names_are_read_by_keymint() -> None:
    # A misspelt variable would be ignored silently and its default used: every name the
    # manifests set for keymint containers must be one the settings parsers read.
    known = set()
    for source in SETTINGS_SOURCES:
        known |= set(re.findall(r'"([A-Z][A-Z0-9_]{2,})"', source.read_text()))
    names: set[str] = set()
    for name in ("keymint-config", "keymint-gateway", "keymint-signer"):
        names |= set(configmap_data(name))
    for workload in (gateway(), signers(), yubihsm_signer()):
        for c in pod_spec(workload)["containers"]:
            names |= {e["name"] for e in c.get("env", [])}
    assert names - known <= set(HELPER_ENV), names - known - set(HELPER_ENV)


# ----------------------------------------------------------------------------------------------
# Envoy


def test_envoy_template_renders_with_the_configmap_values() -> None:
    deployment = envoy()
    render = container(deployment, "render-config")
    values = container_env(render, pod_labels=pod_labels(deployment), secrets={})
    template = (REPO / "envoy" / "envoy.yaml").read_text()
    # Exactly the template's placeholders: a new one without a value would stop the pod (the
    # render step uses substitute, which refuses missing names), a stale value is noise.
    assert set(values) == envoy_placeholders(template)
    rendered = yaml.safe_load(string.Template(template).substitute(values))
    addresses = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "socket_address" in node:
                addresses.append(node["socket_address"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(rendered)
    pairs = {(a["address"], int(a["port_value"])) for a in addresses}
    proxy = container(deployment, "envoy")
    gateway_container = container(gateway(), "gateway")
    gateway_host = f"keymint-gateway.{NAMESPACE}.svc.cluster.local"
    assert values["GATEWAY_ADDRESS"] == gateway_host
    assert (gateway_host, port_number(gateway_container, "grpc")) in pairs
    assert (gateway_host, port_number(gateway_container, "http")) in pairs
    assert ("0.0.0.0", port_number(proxy, "https")) in pairs
    assert (values["ADMIN_ADDRESS"], int(values["ADMIN_PORT"])) in pairs
    assert values["ADMIN_ADDRESS"] == "127.0.0.1"
    # The files Envoy is told to read are mounted where the values say.
    tls = mounted_volume(deployment, proxy, values["SERVER_CERT"])
    assert tls["secret"]["secretName"] == "keymint-envoy-tls"
    assert PurePosixPath(values["SERVER_KEY"]).parent == PurePosixPath(values["SERVER_CERT"]).parent
    bundle = mounted_volume(deployment, proxy, values["CLIENT_CA_BUNDLE"])
    assert bundle["configMap"]["name"] == "keymint-spiffe-bundle"
    # mTLS to the gateway's Check port: Envoy's certificate and the gateway CA from their Secret,
    # and the gateway identity Envoy demands is the one the README has the operator issue.
    for name in ("CHECK_CLIENT_CERT", "CHECK_CLIENT_KEY", "GATEWAY_CA_BUNDLE"):
        volume = mounted_volume(deployment, proxy, values[name])
        assert volume["secret"]["secretName"] == "keymint-envoy-check-tls", name
    assert values["GATEWAY_SPIFFE_ID"] == spiffe_id(gateway_name())
    assert values["GATEWAY_SPIFFE_ID"] in (K8S / "README.md").read_text()


def test_envoy_runs_the_rendered_config() -> None:
    deployment = envoy()
    render = container(deployment, "render-config")
    proxy = container(deployment, "envoy")
    script = render["args"][0]
    (source,) = re.findall(r'Path\("([^"]+)"\)\.read_text', script)
    (target,) = re.findall(r'Path\("([^"]+)"\)\.write_text', script)
    assert "substitute(" in script
    assert "safe_substitute" not in script
    template = mounted_volume(deployment, render, source)
    assert template["configMap"]["name"] == "keymint-envoy-config"
    assert "emptyDir" in mounted_volume(deployment, render, target)
    assert (
        mounted_volume(deployment, proxy, target)["name"]
        == (mounted_volume(deployment, render, target)["name"])
    )
    args = proxy["args"]
    assert args[args.index("--config-path") + 1] == target
    assert proxy["command"] == ["envoy"]


def test_gateway_service_is_headless_for_envoy() -> None:
    service = find("Service", "keymint-gateway")
    assert service["spec"]["clusterIP"] == "None"
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    c = container(gateway(), "gateway")
    assert {n: p["port"] for n, p in ports.items()} == {
        "grpc": port_number(c, "grpc"),
        "http": port_number(c, "http"),
    }


def test_every_service_selects_a_workload_and_its_ports() -> None:
    for service in objects("Service"):
        matched = [
            w
            for w in workloads(with_components=False)
            if selects({"matchLabels": service["spec"]["selector"]}, pod_labels(w))
        ]
        assert len(matched) == 1, service["metadata"]["name"]
        (workload,) = matched
        for port in service["spec"]["ports"]:
            names = {p["name"] for c in pod_spec(workload)["containers"] for p in c["ports"]}
            assert port["targetPort"] in names, service["metadata"]["name"]


# ----------------------------------------------------------------------------------------------
# NetworkPolicies


def test_namespace_denies_by_default() -> None:
    (deny,) = [
        p for p in objects("NetworkPolicy") if p["metadata"]["name"] == "keymint-default-deny"
    ]
    assert deny["spec"]["podSelector"] == {}
    assert sorted(deny["spec"]["policyTypes"]) == ["Egress", "Ingress"]
    assert not deny["spec"].get("ingress")
    assert not deny["spec"].get("egress")
    # And every workload also has its own policy with both directions declared.
    for workload in workloads(with_components=False):
        own = [p for p in policies_for(pod_labels(workload)) if p["spec"]["podSelector"]]
        assert len(own) == 1, workload_id(workload)
        assert sorted(own[0]["spec"]["policyTypes"]) == ["Egress", "Ingress"]


def admitted(target: dict[str, Any]) -> list[tuple[dict[str, Any], set[int]]]:
    """(peer, ports) for every ingress rule of every policy selecting the target's pods."""
    found = []
    for rule in rules(pod_labels(target), "ingress"):
        ports = {int(p["port"]) for p in rule.get("ports", [])}
        for peer in rule.get("from", [{}]):
            found.append((peer, ports))
    return found


def only_pods(peer: dict[str, Any], allowed: dict[str, Any]) -> bool:
    """The peer is a same-namespace pod selector that admits `allowed`'s pods and no other
    workload's."""
    if set(peer) != {"podSelector"}:
        return False
    selector = peer["podSelector"]
    return all(
        selects(selector, pod_labels(w)) == (w["metadata"]["name"] == allowed["metadata"]["name"])
        for w in workloads(with_components=False)
    )


def test_signers_admit_only_the_gateway_on_the_signer_port() -> None:
    port = port_number(container(signers(), "signer"), "signer")
    peers = admitted(signers())
    assert peers
    for peer, ports in peers:
        assert only_pods(peer, gateway()), peer
        assert ports == {port}


def test_redis_admits_only_the_gateways_and_the_signers() -> None:
    peers = admitted(redis())
    assert peers
    for peer, ports in peers:
        assert only_pods(peer, gateway()) or only_pods(peer, signers()), peer
        assert ports == {6379}
    assert not list(rules(pod_labels(redis()), "egress"))


def test_gateway_admits_only_envoy() -> None:
    c = container(gateway(), "gateway")
    peers = admitted(gateway())
    assert peers
    for peer, ports in peers:
        assert only_pods(peer, envoy()), peer
        assert ports == {port_number(c, "grpc"), port_number(c, "http")}


def egress(target: dict[str, Any]) -> list[tuple[dict[str, Any], set[tuple[str, int]]]]:
    found = []
    for rule in rules(pod_labels(target), "egress"):
        ports = {(p.get("protocol", "TCP"), int(p["port"])) for p in rule.get("ports", [])}
        for peer in rule.get("to", [{}]):
            found.append((peer, ports))
    return found


def reaches_dns(allowed: list[tuple[dict[str, Any], set[tuple[str, int]]]]) -> bool:
    return any(
        peer.get("namespaceSelector", {}).get("matchLabels")
        == {"kubernetes.io/metadata.name": "kube-system"}
        and {("UDP", 53), ("TCP", 53)} <= ports
        for peer, ports in allowed
    )


def reaches_internet_https(allowed: list[tuple[dict[str, Any], set[tuple[str, int]]]]) -> bool:
    return any(
        peer.get("ipBlock", {}).get("cidr") == "0.0.0.0/0"
        and "169.254.0.0/16" in peer["ipBlock"].get("except", [])
        and ports == {("TCP", 443)}
        for peer, ports in allowed
    )


def test_gateway_egress_reaches_signers_redis_dns_and_the_oidc_issuer() -> None:
    allowed = egress(gateway())
    signer_port = port_number(container(signers(), "signer"), "signer")
    assert any(
        only_pods(peer, signers()) and ports == {("TCP", signer_port)} for peer, ports in allowed
    )
    assert any(only_pods(peer, redis()) and ports == {("TCP", 6379)} for peer, ports in allowed)
    assert reaches_dns(allowed)
    assert reaches_internet_https(allowed)


def test_signer_egress_is_dns_redis_and_the_oidc_issuer_only() -> None:
    allowed = egress(signers())
    assert reaches_dns(allowed)
    assert reaches_internet_https(allowed)
    assert any(only_pods(peer, redis()) and ports == {("TCP", 6379)} for peer, ports in allowed)
    assert len(allowed) == 3


# ----------------------------------------------------------------------------------------------
# Disruption budgets


def budget_for(workload: dict[str, Any]) -> dict[str, Any]:
    (found,) = [
        b["spec"]
        for b in objects("PodDisruptionBudget")
        if selects(b["spec"]["selector"], pod_labels(workload))
    ]
    return found


def test_disruption_budgets() -> None:
    assert budget_for(gateway())["minAvailable"] == 2
    assert budget_for(signers())["maxUnavailable"] == 1
    # With one signer away the others still reach the threshold.
    config = configmap_data("keymint-config")
    replicas = signers()["spec"]["replicas"]
    assert replicas - budget_for(signers())["maxUnavailable"] >= int(config["FROST_T"])
    assert budget_for(gateway())["minAvailable"] < gateway()["spec"]["replicas"]
    for workload in workloads(with_components=False):
        if workload["spec"]["replicas"] > 1:
            assert budget_for(workload), workload_id(workload)


# ----------------------------------------------------------------------------------------------
# What the operator provides


def referenced(kind: str) -> set[str]:
    names = set()
    for workload in workloads():
        pod = pod_spec(workload)
        for volume in pod.get("volumes", []):
            if kind == "Secret" and "secret" in volume:
                names.add(volume["secret"]["secretName"])
            if kind == "ConfigMap" and "configMap" in volume:
                names.add(volume["configMap"]["name"])
        for c in containers(pod):
            for source in c.get("envFrom", []):
                if kind == "ConfigMap" and "configMapRef" in source:
                    names.add(source["configMapRef"]["name"])
            for item in c.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if kind == "Secret" and ref:
                    names.add(ref["name"])
    return names


def test_every_secret_is_documented() -> None:
    readme = (K8S / "README.md").read_text()
    defined = {o["metadata"]["name"] for o in objects("Secret")}
    for name in referenced("Secret") - defined:
        assert re.search(rf"create secret \w+ {re.escape(name)}\b", readme), name


def test_every_configmap_is_defined_generated_or_documented() -> None:
    readme = (K8S / "README.md").read_text()
    defined = {o["metadata"]["name"] for o in objects("ConfigMap")}
    defined |= {g["name"] for g in kustomization()["configMapGenerator"]}
    defined |= {d["metadata"]["name"] for d in _documents(YUBIHSM / "yubihsm-config.yaml")}
    for name in referenced("ConfigMap") - defined:
        assert re.search(rf"create configmap {re.escape(name)}\b", readme), name


@pytest.mark.parametrize(
    ("workload", "name"), [(gateway, "gateway"), (signers, "signer")], ids=["gateway", "signer"]
)
def test_the_grace_period_covers_the_pre_stop_wait_and_the_processes_own_stop_bound(
    workload: Any, name: str
) -> None:
    """The kubelet's SIGKILL must come after the process has stopped or, stuck, said where
    (signer.stopping): the grace period covers the preStop sleep and STOP_DEADLINE_SECONDS."""
    from signer.stopping import STOP_DEADLINE_SECONDS

    pod = pod_spec(workload())
    pre_stop = container(workload(), name).get("lifecycle", {}).get("preStop", {})
    slept = pre_stop.get("sleep", {}).get("seconds", 0)
    assert pod["terminationGracePeriodSeconds"] >= slept + STOP_DEADLINE_SECONDS + 1
