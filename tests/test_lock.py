"""The lock files match pyproject.toml, pin every requirement it declares, and carry hashes."""

from __future__ import annotations

import tomllib

import pytest
from packaging.requirements import Requirement

from tests.conftest import REPO
from tools.lock import LOCKS, PYPROJECT, Lock, dependency_digest, normalize, pinned, recorded_digest

PROJECT = tomllib.loads(PYPROJECT.read_text())["project"]
ALL_EXTRAS = tuple(PROJECT["optional-dependencies"])


def declared(lock: Lock) -> list[Requirement]:
    """What pyproject.toml asks of `lock`: the dependencies and those of its extras."""
    extras = ALL_EXTRAS if lock.extras is None else lock.extras
    wanted = [Requirement(r) for r in PROJECT["dependencies"]]
    for extra in extras:
        wanted += [Requirement(r) for r in PROJECT["optional-dependencies"][extra]]
    return [r for r in wanted if normalize(r.name) != "keymint"]  # `all` names the others


@pytest.mark.parametrize("lock", LOCKS, ids=lambda lock: lock.path.name)
def test_the_lock_was_made_from_todays_pyproject(lock: Lock) -> None:
    assert recorded_digest(lock) == dependency_digest(lock), (
        f"{lock.path.name} is older than pyproject.toml's dependencies: run `make lock`"
    )


@pytest.mark.parametrize("lock", LOCKS, ids=lambda lock: lock.path.name)
def test_every_declared_requirement_is_pinned_within_its_range(lock: Lock) -> None:
    pins = pinned(lock)
    for requirement in declared(lock):
        version = pins.get(normalize(requirement.name))
        assert version is not None, f"{requirement.name} is not in {lock.path.name}"
        assert requirement.specifier.contains(version, prereleases=True), (requirement, version)


@pytest.mark.parametrize("lock", LOCKS, ids=lambda lock: lock.path.name)
def test_every_pin_is_exact_and_carries_its_hashes(lock: Lock) -> None:
    current = ""
    hashes: dict[str, int] = {}
    for line in lock.path.read_text().splitlines():
        if line[:1].isalnum():
            current = line.split(" ", 1)[0]
            assert "==" in current, f"not pinned exactly: {line}"
            hashes[current] = 0
        elif "--hash=sha256:" in line and current:
            hashes[current] += 1
    assert hashes, f"{lock.path.name} pins nothing"
    assert [pin for pin, count in hashes.items() if count == 0] == []


def test_the_image_installs_the_setup_versions() -> None:
    setup, image = (pinned(lock) for lock in LOCKS)
    assert {name: setup.get(name) for name in image} == image


def test_setup_and_the_image_install_from_the_locks() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert "--require-hashes -r requirements.lock" in makefile
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "--require-hashes" in dockerfile
    assert "-r requirements-image.lock" in dockerfile
