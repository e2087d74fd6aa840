"""What `make setup` must get right beyond `pip install`: packages that ship the same files."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path


def test_the_opentelemetry_protos_are_opentelemetry_protos_own() -> None:
    # xds-protos also ships opentelemetry/proto/..., older: the OTLP exporter cannot import those.
    from opentelemetry.proto.common.v1 import common_pb2

    assert hasattr(common_pb2, "InstrumentationScope")
    installed = importlib.metadata.files("opentelemetry-proto") or []
    mine = [f for f in installed if str(f).endswith("common/v1/common_pb2.py")]
    assert len(mine) == 1
    assert Path(str(mine[0].locate())).read_bytes() == Path(common_pb2.__file__).read_bytes()
