"""How keymint's server processes run asyncio and gRPC: the defaults a new credential measured
fastest with (docs/performance-mint.md, "Wake-ups").

A new credential crosses two gRPC hops (Envoy to the gateway, the gateway to t signers), and each
message on a hop is a chain of wake-ups: a gRPC thread reads the socket, grpc.aio's
completion-queue thread takes the event and writes a byte to the event loop's socket, the loop
wakes and runs the handler. On a loaded machine each wake-up may wait for a core. Two defaults
shorten that chain; both measured less CPU per mint in paired runs, and neither changes what any
code checks:

- gRPC's I/O through its iomgr pollers instead of its EventEngine (`GRPC_EXPERIMENTS`), so the
  thread waiting on the completion queue polls the sockets itself instead of being woken by an
  EventEngine thread. gRPC reads `GRPC_EXPERIMENTS` once, when it is first imported; `signer`
  sets it as it is imported (`signer/__init__.py`), before any of its modules imports grpc, and
  leaves a value the operator set alone. The processes keymint starts (`extauthz serve
  --workers`) inherit it. tests/signer/test_runtime.py fails when the installed gRPC no longer
  knows these experiments.
- uvloop runs the event loop of `signer serve` and `extauthz serve` (`run`); grpc.aio drives its
  completion queue through any asyncio loop (a reader on a socket), uvloop's included.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Coroutine, MutableMapping
from typing import Any, TypeVar

T = TypeVar("T")

# Client connections and listeners through iomgr; the rest as the installed gRPC defaults.
GRPC_EXPERIMENTS = "-event_engine_client,-event_engine_listener"


def grpc_defaults(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Set keymint's gRPC settings unless gRPC is already imported (it would not read them, and
    only this process's children, whatever their code, would inherit them); an operator's own
    value stays. Whether gRPC will read them."""
    if "grpc" in sys.modules:
        return False
    environ.setdefault("GRPC_EXPERIMENTS", GRPC_EXPERIMENTS)
    return True


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)`, on uvloop's event loop."""
    import asyncio  # here, not above: `import signer` runs this module's grpc_defaults

    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)
