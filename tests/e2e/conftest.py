"""One stack per test module (module scope): starting it takes a few seconds, a test far less."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from extauthz.dev.stack import LocalStack, local_stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with local_stack(tmp_path_factory.mktemp("e2e")) as running:
        yield running
