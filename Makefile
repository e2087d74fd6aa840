# keymint: `make demo` and `make test` are the two commands a newcomer needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := swig libpcsclite-dev pcscd softhsm2 opensc redis-server nodejs prometheus libfaketime
STAMP := $(VENV)/.installed
NODE_STAMP := tests/interop/node_modules/.installed

.PHONY: setup apt test lint typecheck unit rules test-faults soak demo demo-check demo-frost bench bench-frost bench-sign bench-check bench-e2e fuzz clean

setup: apt $(STAMP) $(NODE_STAMP)

# Debian packages: pyscard (yubikey-manager) builds against PC/SC, the vault tests use SoftHSM2,
# the shared-cache tests start a real redis-server, promtool (prometheus) checks k8s/monitoring/,
# the fault tests run a signer with its clock ahead (libfaketime).
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

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[all,dev,bench]'
	# xds-protos ships its own, older copy of the OpenTelemetry protos under the same paths as
	# opentelemetry-proto; whichever pip installed last wins. The exporter needs the newer ones.
	$(PY) -m pip install -q --force-reinstall --no-deps \
	  "opentelemetry-proto==$$($(PY) -c 'import importlib.metadata as m; print(m.version("opentelemetry-proto"))')"
	touch $(STAMP)

# jose (panva) is the independent JWT verifier of the interop tests.
$(NODE_STAMP): tests/interop/package.json tests/interop/package-lock.json
	npm ci --prefix tests/interop --no-audit --no-fund --silent
	touch $(NODE_STAMP)

lint: setup
	$(VENV)/bin/ruff check signer extauthz tests benchmarks demo fuzz
	$(VENV)/bin/ruff format --check signer extauthz tests benchmarks demo fuzz

typecheck: setup
	$(VENV)/bin/mypy signer extauthz

unit: setup
	$(PY) -m pytest -q

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

bench: bench-frost bench-sign bench-check bench-e2e

bench-frost: setup
	$(PY) benchmarks/bench_frost.py

bench-sign: setup
	$(PY) benchmarks/bench_sign.py

bench-check: setup
	$(PY) benchmarks/bench_check.py

bench-e2e: setup
	$(PY) benchmarks/bench_e2e.py

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
