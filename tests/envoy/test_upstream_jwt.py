"""upstream-jwt.yaml live: jwt_authn trusts only the pinned JWKS file, and reads it when it loads.

What envoy/README.md's rotation procedure rests on, shown with the real Envoy 1.40: a rewritten
`local_jwks` file changes nothing, even with a `watched_directory` on the data source, until a hot
restart (the next `--restart-epoch`) loads the config again; the listener keeps its port and
traffic, and afterwards tokens of the old and the new key both verify.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from extauthz.dev.envoy import EnvoyProcess, declared_defaults, render_text
from extauthz.dev.servers import BackgroundLoop, EchoUpstream, request
from extauthz.tools.pinned_keys import pinned_jwks
from signer.files import write_atomically
from signer.token import compact, header_for, kid_for, signing_input

DEFAULTS = declared_defaults("upstream-jwt.yaml")
OLD, NEW = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()


def raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def pin(path: Path, *keys: Ed25519PrivateKey) -> None:
    """What `extauthz pin-keys --out` does: the trusted keys, written atomically."""
    data = json.dumps(pinned_jwks({kid_for(raw(k)): raw(k) for k in keys})).encode()
    write_atomically(path, data)


def token(key: Ed25519PrivateKey) -> str:
    now = int(time.time())
    claims = {
        "iss": DEFAULTS["KEYMINT_ISSUER"],
        "sub": "svc",
        "aud": DEFAULTS["DEPLOY_AUDIENCE"],
        "scope": "deploy",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": "j",
    }
    message = signing_input(header_for(raw(key)), claims)
    return compact(message, key.sign(message))


class Upstream:
    def __init__(self, directory: Path, background: BackgroundLoop, echo_port: int) -> None:
        self.directory = directory
        self.background = background
        self.echo_port = echo_port

    def envoy(self, name: str, *, watched: bool = False) -> EnvoyProcess:
        pinned = self.directory / name / "keymint-jwks.json"
        pinned.parent.mkdir()
        pin(pinned, OLD)
        config = self.directory / f"{name}.yaml"
        config.write_text(self.config(pinned, 0, watched=watched))
        envoy = EnvoyProcess(config, self.directory, name).start()
        # A hot restart hands a listening socket over by its address: name the port it got.
        config.write_text(self.config(pinned, envoy.port("api"), watched=watched))
        return envoy

    def config(self, pinned: Path, port: int, *, watched: bool) -> str:
        text = render_text(
            "upstream-jwt.yaml",
            ADMIN_PORT=0,
            LISTEN_ADDRESS="127.0.0.1",
            LISTEN_PORT=port,
            PINNED_JWKS_FILE=pinned,
            APP_PORT=self.echo_port,
        )
        if watched:  # the DataSource's own reload mechanism, for the record
            line = f'local_jwks: {{filename: "{pinned}"}}'
            assert line in text
            text = text.replace(
                line,
                f'local_jwks: {{filename: "{pinned}", '
                f'watched_directory: {{path: "{pinned.parent}"}}}}',
            )
        return text

    def status(self, envoy: EnvoyProcess, bearer: str) -> int:
        url = f"http://127.0.0.1:{envoy.port('api')}/deploy/v1/releases"
        headers = {"authorization": f"Bearer {bearer}"}
        return self.background.run(request("GET", url, headers, None, None, None)).status


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    background = BackgroundLoop()
    echo = EchoUpstream()
    background.run(echo.start())
    try:
        yield Upstream(tmp_path_factory.mktemp("upstream-jwt"), background, echo.port)
    finally:
        background.run(echo.stop())
        background.close()


def test_a_pinned_key_verifies_and_a_key_added_to_the_file_needs_a_hot_restart(
    upstream: Upstream,
) -> None:
    envoy = upstream.envoy("pinned")
    try:
        assert upstream.status(envoy, token(OLD)) == 200
        assert upstream.status(envoy, token(NEW)) == 401
        pin(Path(envoy.config.parent / "pinned" / "keymint-jwks.json"), OLD, NEW)
        time.sleep(1.0)
        assert upstream.status(envoy, token(NEW)) == 401  # not re-read
        port = envoy.port("api")
        envoy.hot_restart()
        assert envoy.port("api") == port  # the listening socket was handed over
        assert upstream.status(envoy, token(NEW)) == 200
        assert upstream.status(envoy, token(OLD)) == 200
    finally:
        envoy.stop()


def test_a_watched_directory_does_not_make_jwt_authn_reread_the_file(upstream: Upstream) -> None:
    envoy = upstream.envoy("watched", watched=True)
    try:
        assert upstream.status(envoy, token(NEW)) == 401
        pin(Path(envoy.config.parent / "watched" / "keymint-jwks.json"), OLD, NEW)
        time.sleep(2.0)
        assert upstream.status(envoy, token(NEW)) == 401
        assert upstream.status(envoy, token(OLD)) == 200
    finally:
        envoy.stop()
