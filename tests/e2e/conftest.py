"""One stack per test module (module scope): starting it takes a few seconds, a test far less."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.stack import E2EStack, e2e_stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2EStack]:
    with e2e_stack(tmp_path_factory.mktemp("e2e")) as running:
        yield running
