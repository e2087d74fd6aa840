# keymint: one image for the gateway and the signers.
#
#   gateway:  the default command, `extauthz serve`
#   signers:  the same image with the command `signer serve` (k8s/signer.yaml sets
#             `command: ["signer", "serve"]`)
#
# Both are configured by the environment only (extauthz/config.py, signer/server.py,
# signer/vault/config.py); k8s/README.md lists what each Deployment sets.
#
# The base is pinned by tag here so the file reads plainly. Production builds pin it by digest
# as well (python:3.11.7-slim-bookworm@sha256:...), so a re-pushed tag cannot change the image.
# Both stages use the same base, so the wheels built in the first run in the second.

FROM python:3.11.7-slim-bookworm AS builder

# Build dependencies of the extras' native code: pyscard (yubikey-manager) needs gcc, swig and
# the PC/SC headers.
# DL3008 (unpinned apt versions): the pinned base fixes the Debian release; exact versions would
# break the build whenever a bookworm security update replaces them.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc swig libpcsclite-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# .dockerignore lets in only what the wheel is built from.
COPY pyproject.toml README.md requirements-image.lock ./
COPY signer ./signer
COPY extauthz ./extauthz

# As `make setup` installs from requirements.lock: every dependency pinned and checked against its
# hashes (requirements-image.lock, resolved within the same pins by `make lock`), then the project
# alone. The image takes the runtime extras: `all` less `envoy` (the Envoy binary the tests run;
# production Envoy is its own image), less `login` (the OS keyring for `extauthz login`, on
# engineers' machines) and less `dev`. tests/test_dockerfile.py keeps this list and the one below
# equal to pyproject.toml's, and tests/test_lock.py the lock to pyproject.toml.
RUN pip wheel --no-cache-dir --wheel-dir /wheels --require-hashes -r requirements-image.lock \
    && pip wheel --no-cache-dir --wheel-dir /wheels --no-deps ".[hsm,yubikey,redis,rego,tracing]"


FROM python:3.11.7-slim-bookworm

LABEL org.opencontainers.image.title="keymint" \
      org.opencontainers.image.description="Envoy ext_authz gateway and FROST threshold signer" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"

# Runtime libraries only: PC/SC for the YubiKey vault. No compiler, no headers. PKCS#11 modules
# are not installed here: they come from the HSM vendor (see k8s/README.md).
# DL3008 (unpinned apt versions): as in the builder, the pinned base fixes the release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libpcsclite1 \
    && rm -rf /var/lib/apt/lists/*

# Installed from the builder's wheels only: no index, no build tools in this stage, and no other
# version than the lock's to choose from. The wheels are bind-mounted (BuildKit), so they are not
# left in a layer of the image.
# DL3013 (unpinned pip version): opentelemetry-proto is reinstalled from the same wheels, which
# hold exactly the one version the builder resolved.
# hadolint ignore=DL3013
RUN --mount=type=bind,from=builder,source=/wheels,target=/tmp/wheels \
    pip install --no-cache-dir --no-index --find-links=/tmp/wheels \
        "keymint[hsm,yubikey,redis,rego,tracing]==0.1.0" \
    # xds-protos carries an older copy of the OpenTelemetry protos at the same paths: the
    # exporter's own must be the ones installed last (as `make setup` does).
    && pip install --no-cache-dir --no-index --find-links=/tmp/wheels --force-reinstall --no-deps \
        opentelemetry-proto

# An unprivileged user with the fixed UID/GID the Kubernetes manifests run as.
RUN groupadd --system --gid 10001 keymint \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /var/lib/keymint --shell /usr/sbin/nologin keymint \
    && mkdir -p /var/lib/keymint \
    && chown 10001:10001 /var/lib/keymint

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# The relative default paths (./state/...) land here; Kubernetes mounts a volume on it.
WORKDIR /var/lib/keymint
USER 10001:10001

# gateway gRPC over mTLS (ext_authz, grpc.health.v1; k8s/config.yaml sets KEYMINT_GRPC_LISTEN and
# the KEYMINT_CHECK_* files, and without them the Check port is a Unix socket under ./state),
# gateway HTTP (JWKS, /token, health, metrics), signer gRPC over mTLS.
EXPOSE 9001 8080 9443

# Kubernetes probes the processes (k8s/gateway.yaml, k8s/signer.yaml); no image healthcheck.
HEALTHCHECK NONE

ENTRYPOINT ["extauthz"]
CMD ["serve"]
