# keymint: `make demo` and `make test` are the two commands a newcomer needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := swig libpcsclite-dev pcscd softhsm2 opensc redis-server nodejs prometheus libfaketime wrk
STAMP := $(VENV)/.installed
NODE_STAMP := tests/interop/node_modules/.installed

.PHONY: setup lock apt test lint typecheck unit rules test-faults soak demo demo-check demo-frost bench bench-frost bench-sign bench-check bench-e2e bench-scale bench-report fuzz clean

setup: apt $(STAMP) $(NODE_STAMP)

# Debian packages: pyscard (yubikey-manager) builds against PC/SC, the vault tests use SoftHSM2,
# the shared-cache tests start a real redis-server, promtool (prometheus) checks k8s/monitoring/,
# the fault tests run a signer with its clock ahead (libfaketime), bench-e2e drives Envoy with wrk.
apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  else \
	    echo "missing Debian packages; run: sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi

# Every package from requirements.lock, each checked against its hashes; then the project itself
# (no dependencies left to resolve). `make lock` refreshes the lock after pyproject.toml changes.
$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --require-hashes -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	# xds-protos ships its own, older copy of the OpenTelemetry protos under the same paths as
	# opentelemetry-proto; whichever pip installed last wins. The exporter needs the newer ones.
	awk '/^opentelemetry-proto==/{p=1} p{print} p&&!/\\$$/{exit}' requirements.lock > $(VENV)/otel-proto.lock
	$(PY) -m pip install -q --force-reinstall --no-deps --require-hashes -r $(VENV)/otel-proto.lock
	touch $(STAMP)

# Resolve pyproject.toml again into requirements.lock and requirements-image.lock (with hashes),
# keeping the pins already there; `make lock ARGS=--upgrade` takes the newest of everything.
lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q uv
	$(PY) -m tools.lock $(ARGS)

# jose (panva) is the independent JWT verifier of the interop tests.
$(NODE_STAMP): tests/interop/package.json tests/interop/package-lock.json
	npm ci --prefix tests/interop --no-audit --no-fund --silent
	touch $(NODE_STAMP)

lint: setup
	$(VENV)/bin/ruff check signer extauthz tests benchmarks demo fuzz tools
	$(VENV)/bin/ruff format --check signer extauthz tests benchmarks demo fuzz tools

typecheck: setup
	$(VENV)/bin/mypy signer extauthz

# The suite starts a Python process for every gateway, signer and tool it runs; with their bytecode
# kept in __pycache__ none compiles keymint again. Some machines set PYTHONDONTWRITEBYTECODE, which
# made tests/e2e and tests/replicas 13-16% slower in two paired runs (130 and 112 s against 109 and
# 97 s, fresh clones, 2026-12-02).
unit: setup
	PYTHONDONTWRITEBYTECODE= $(PY) -m pytest -q

# The alert rules and their unit tests (tests/k8s/test_monitoring.py runs them in `unit` too).
rules: apt
	promtool check rules k8s/monitoring/alerts.yaml
	cd k8s/monitoring && promtool test rules alerts.test.yaml

test: lint typecheck rules unit

# Faults one at a time under steady traffic through Envoy (2 replicas, 3 signers, Redis), each
# with its expected outcome; ends with one JSON line. As root: the audit-disk faults mount a
# tmpfs. A quick subset (tests/faults/test_quick.py) runs in `make test`.
test-faults: setup
	$(PY) -m tests.faults.run

# Ten minutes at a steady rate with a key rotation, a signer restart and a gateway restart; RSS
# and open files of every process against their level after warm-up. Ends with one JSON line.
soak: setup
	$(PY) -m tests.faults.soak

# The whole stack on loopback with real Envoy, a DKG among 3 signers, and three flows.
demo: setup
	$(PY) -m demo

demo-check: setup
	$(PY) -m demo --check

# The sans-IO core alone: a DKG and threshold-signed JWTs in one process.
demo-frost: setup
	$(PY) -m signer.demo

# Each benchmark prints figures and ends with one JSON line; its output, stamped with the time
# it started (the machine is shared: figures carry their time of day), is kept in
# docs/performance/ for `make bench-report`. bench-e2e and bench-scale also write their results
# (JSON) and plots (PNG) there. `make bench` runs them all, then the report.
BENCH_OUT := docs/performance
BENCH_LOG = set -o pipefail; mkdir -p $(BENCH_OUT); { echo "started $$(date -u +%FT%TZ)"; $(PY) $(1); } 2>&1 | tee $(BENCH_OUT)/$(2).log

bench: bench-frost bench-sign bench-check bench-e2e bench-scale bench-report

bench-frost: setup
	$(call BENCH_LOG,benchmarks/bench_frost.py,bench-frost)

bench-sign: setup
	$(call BENCH_LOG,benchmarks/bench_sign.py,bench-sign)

bench-check: setup
	$(call BENCH_LOG,benchmarks/bench_check.py,bench-check)

# The whole path through the front Envoy (2 replicas, 3 signers, Redis) with wrk, against a
# do-nothing ext_authz server, no ext_authz and Envoy's jwt_authn, in the same run.
bench-e2e: setup
	$(call BENCH_LOG,benchmarks/bench_e2e.py,bench-e2e)

# Check cost over 1k-1M cached credentials, policy decisions over 10-10k bindings, signature
# latency from 2-of-3 to 8-of-15 signers, RSS per cached credential.
bench-scale: setup
	$(call BENCH_LOG,benchmarks/bench_scale.py,bench-scale)

# docs/performance.md from what the benchmarks above left in docs/performance/ (runs none).
bench-report: setup
	$(PY) benchmarks/report.py

# Where a new credential's milliseconds go (docs/performance-mint.md): bench-check's new-credential
# load with wall-clock timers around each step in the gateway and the signers, then with py-spy
# sampling each process (collapsed stacks in PROFILE_DIR). compare-mint runs the same load against
# BASELINE (another checkout) and this tree side by side and prints their ratio.
.PHONY: profile-mint compare-mint
PROFILE_DIR ?= /tmp/keymint-profile
profile-mint: setup
	$(PY) benchmarks/profile_mint.py --phases
	$(PY) benchmarks/profile_mint.py --py-spy $(PROFILE_DIR)

compare-mint: setup
	test -n "$(BASELINE)" || { echo "usage: make compare-mint BASELINE=<another checkout>"; exit 2; }
	$(PY) benchmarks/compare_mint.py --baseline $(BASELINE)

# Coverage-guided fuzzing (atheris) of every parser a caller, a gateway or a ceremony driver
# reaches: FUZZ_RUNS iterations per target, FUZZ_JOBS targets at once, from the seeds in
# fuzz/seeds/. The last line is JSON: {"targets": {name: {"iterations": N, "crashes": C}}}.
# `make test` runs 3,000 iterations per target (tests/fuzz). docs/reliability.md has the figures.
FUZZ_RUNS ?= 100000
FUZZ_JOBS ?= 2
fuzz: setup
	$(PY) -m fuzz --runs $(FUZZ_RUNS) --jobs $(FUZZ_JOBS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
