"""signer.runtime: keymint's server processes run on uvloop, with gRPC's iomgr pollers."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import uvloop

from signer import cli, runtime

REPO = Path(__file__).resolve().parents[2]


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"}
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**environ, "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def test_run_runs_the_coroutine_on_uvloop() -> None:
    async def main() -> type[asyncio.AbstractEventLoop]:
        return type(asyncio.get_running_loop())

    assert runtime.run(main()) is uvloop.Loop


def test_signer_serve_runs_on_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    import signer.config_check
    import signer.observability
    import signer.server

    loops: list[type[asyncio.AbstractEventLoop]] = []

    async def fake_serve(settings: object, env: object, *, started: Any) -> None:
        loops.append(type(asyncio.get_running_loop()))

    observability = SimpleNamespace(start_tracing=lambda name: None)
    settings = SimpleNamespace(identifier=1, observability=observability)
    monkeypatch.setattr(signer.config_check, "load", lambda environ, config_file: (settings, {}))
    monkeypatch.setattr(signer.observability, "configure_logging", lambda *a, **k: None)
    monkeypatch.setattr(signer.server, "serve", fake_serve)
    assert cli.main(["serve"]) == 0
    assert loops == [uvloop.Loop]


def test_importing_signer_first_sets_the_grpc_experiments_grpc_then_reads() -> None:
    done = _python(
        "import os, signer, grpc; grpc.insecure_channel('127.0.0.1:1').close(); "
        "print(os.environ['GRPC_EXPERIMENTS'])"
    )
    assert done.stdout.strip() == runtime.GRPC_EXPERIMENTS
    # gRPC names an experiment it does not know (a release that dropped these): time to
    # measure again (docs/performance-mint.md) and choose anew.
    assert "Unknown experiment" not in done.stderr


def test_the_gateway_sets_them_before_grpc_is_imported() -> None:
    # `extauthz serve` and the benchmarks' gateways start from extauthz.server.app.
    done = _python("import os, extauthz.server.app; print(os.environ.get('GRPC_EXPERIMENTS'))")
    assert done.stdout.strip() == runtime.GRPC_EXPERIMENTS


def test_an_operators_grpc_experiments_stay() -> None:
    done = _python(
        "import os, signer; print(os.environ['GRPC_EXPERIMENTS'])",
        GRPC_EXPERIMENTS="-monitoring_experiment",
    )
    assert done.stdout.strip() == "-monitoring_experiment"


def test_nothing_is_set_once_grpc_is_imported() -> None:
    # Only the children would see it: a benchmark that imports grpc first and starts an older
    # tree's processes must not hand them this tree's settings.
    done = _python("import os, grpc, signer; print(os.environ.get('GRPC_EXPERIMENTS'))")
    assert done.stdout.strip() == "None"
    assert runtime.grpc_defaults({}) is False  # this test process imported grpc long ago
