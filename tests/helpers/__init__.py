"""Reusable test helpers: a manual clock here; `oidc_issuer` and `certs` beside it."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class ManualClock:
    """A `Callable[[], float]` clock that moves only when a test says so."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Run(Protocol):
    """Run a coroutine to completion on the test's event loop (asyncio.Runner.run)."""

    def __call__(self, coroutine: Coroutine[Any, Any, T], /) -> T: ...
