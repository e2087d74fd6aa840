"""One stack per module: three replicas, Redis, three signers and Envoy take seconds to start."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.replicas.stack import ReplicasStack, replicas_stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReplicasStack]:
    with replicas_stack(tmp_path_factory.mktemp("replicas")) as running:
        yield running
