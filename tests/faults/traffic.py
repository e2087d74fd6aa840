"""Steady traffic through the front Envoy, as callers make it, and what it measured.

Three kinds of caller, each at its own fixed rate (open loop: a slow answer never slows the
schedule, so an outage shows as failures and latency rather than as fewer requests):
- `seen`: services with mTLS certificates minted for at warm-up, on the orders route (the hot
  path: no verification, no policy, no signing);
- `ci`: a CI job's never-seen GitHub OIDC token each time, on the deploy route (verify, policy,
  a 2-of-3 mint, the signers' own checks);
- `exchange`: RFC 8693 `POST /token` with a never-seen OIDC token each time.
Every answer is kept: when it was sent, how long it took, its status, keymint's reason (the JSON
`error` of a denial), and the token a success carried (the one the upstream received, or the
exchange's `access_token`), so a run can check every released token against the audit logs.
"""

from __future__ import annotations

import asyncio
import ssl
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from extauthz.dev.calls import exchange_form
from extauthz.dev.envoy import FRONT_HOSTNAME
from tests.faults.stack import FaultStack

KINDS = ("seen", "ci", "exchange")
CLIENT_TIMEOUT_SECONDS = 10.0
MAX_IN_FLIGHT = 256


@dataclass(frozen=True, slots=True)
class Rates:
    seen: float = 8.0
    ci: float = 5.0
    exchange: float = 3.0

    def of(self, kind: str) -> float:
        rate: float = getattr(self, kind)
        return rate


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: str
    at: float  # wall-clock time the request was sent
    seconds: float
    status: int  # 0: no answer (connection failed or the client gave up)
    reason: str  # "ok", keymint's or OAuth's `error`, or what went wrong on the client
    token: str | None

    @property
    def failed(self) -> bool:
        return self.status != 200

    @property
    def label(self) -> str:
        return f"{self.status} {self.reason}"


class Traffic:
    def __init__(
        self,
        stack: FaultStack,
        rates: Rates | None = None,
        seen_callers: int = 8,
        token_lifetime: int | None = None,
    ):
        """`token_lifetime`: exp - iat of the CI tokens (the issuer's 300 s when None)."""
        self._stack = stack
        self.rates = rates or Rates()
        self._token_lifetime = token_lifetime
        self._svids = [stack.svid(f"/ns/shop/sa/caller-{i}") for i in range(seen_callers)]
        self._contexts: list[ssl.SSLContext] = []
        self._plain = self._context(None)
        for i, svid in enumerate(self._svids):
            cert, key = _write_client(stack, f"caller-{i}", svid)
            self._contexts.append(self._context((cert, key)))
        self.outcomes: list[Outcome] = []
        self._session: aiohttp.ClientSession | None = None
        self._runner: asyncio.Future[None] | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._count = 0

    def _context(self, files: tuple[str, str] | None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self._stack.edge_ca))
        if files is not None:
            context.load_cert_chain(*files)
        return context

    # --- running --------------------------------------------------------------------------------

    def warm(self) -> None:
        """Every seen caller once, so later requests are hot-path hits; raises unless all pass."""

        async def warm() -> list[Outcome]:
            await self._open()
            return list(await asyncio.gather(*(self._seen(i) for i in range(len(self._svids)))))

        for outcome in self._stack.background.run(warm(), timeout=60):
            if outcome.failed:
                raise RuntimeError(f"warm-up failed: {outcome}")

    def start(self) -> None:
        async def begin() -> None:
            await self._open()
            self._runner = asyncio.gather(*(self._schedule(kind) for kind in KINDS))

        self._stack.background.run(begin())

    def stop(self) -> None:
        async def end() -> None:
            if self._runner is not None:
                self._runner.cancel()
                await asyncio.gather(self._runner, return_exceptions=True)
            await asyncio.gather(*self._in_flight, return_exceptions=True)
            if self._session is not None:
                await self._session.close()
                self._session = None

        self._stack.background.run(end(), timeout=CLIENT_TIMEOUT_SECONDS + 20)

    def since(self, start: float, end: float | None = None) -> list[Outcome]:
        stop = time.time() if end is None else end
        return [o for o in list(self.outcomes) if start <= o.at < stop]

    async def _open(self) -> None:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=64, ttl_dns_cache=None)
            timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_SECONDS)
            self._session = aiohttp.ClientSession(connector=connector, timeout=timeout)

    async def _schedule(self, kind: str) -> None:
        rate = self.rates.of(kind)
        if rate <= 0:
            return
        interval = 1.0 / rate
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            if len(self._in_flight) >= MAX_IN_FLIGHT:
                self.outcomes.append(Outcome(kind, time.time(), 0.0, 0, "client_overloaded", None))
                continue
            task = asyncio.create_task(self._one(kind))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _one(self, kind: str) -> None:
        self._count += 1
        if kind == "seen":
            outcome = await self._seen(self._count % len(self._svids))
        elif kind == "ci":
            outcome = await self._ci()
        else:
            outcome = await self._exchange()
        self.outcomes.append(outcome)

    # --- the three callers ----------------------------------------------------------------------

    async def _seen(self, index: int) -> Outcome:
        return await self._call(
            "seen", "GET", "/orders/v1/orders", context=self._contexts[index], read=_forwarded
        )

    def _ci_token(self) -> str:
        claims: dict[str, object] = {"jti": str(uuid.uuid4())}
        if self._token_lifetime is not None:
            claims["exp"] = int(time.time()) + self._token_lifetime
        return self._stack.issuer.mint(claims)

    async def _ci(self) -> Outcome:
        token = self._ci_token()
        return await self._call(
            "ci",
            "GET",
            "/deploy/v1/releases",
            headers={"authorization": f"Bearer {token}"},
            read=_forwarded,
        )

    async def _exchange(self) -> Outcome:
        token = self._ci_token()
        return await self._call(
            "exchange", "POST", "/token", data=exchange_form(token), read=_access_token
        )

    async def _call(
        self,
        kind: str,
        method: str,
        path: str,
        *,
        read: Any,
        context: ssl.SSLContext | None = None,
        headers: dict[str, str] | None = None,
        data: dict[str, str] | None = None,
    ) -> Outcome:
        assert self._session is not None
        at, started = time.time(), time.perf_counter()
        try:
            async with self._session.request(
                method,
                self._stack.front_url + path,
                headers=headers,
                data=data,
                ssl=context or self._plain,
                server_hostname=FRONT_HOSTNAME,
            ) as reply:
                body = await reply.read()
                status = reply.status
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return Outcome(kind, at, time.perf_counter() - started, 0, type(exc).__name__, None)
        seconds = time.perf_counter() - started
        document = _json(body)
        if status != 200:
            return Outcome(kind, at, seconds, status, _reason(document), None)
        token = read(document)
        if token is None:
            return Outcome(kind, at, seconds, status, "no_token_in_answer", None)
        return Outcome(kind, at, seconds, status, "ok", token)


def _json(body: bytes) -> Any:
    import json

    try:
        return json.loads(body)
    except ValueError:
        return None


def _reason(document: Any) -> str:
    """keymint's `error`; for /token, OAuth's `error` and keymint's reason code (the start of
    `error_description`), as `temporarily_unavailable/no_signing_quorum`."""
    if not isinstance(document, dict) or not document.get("error"):
        return "no_error_field"
    error = str(document["error"])
    description = str(document.get("error_description", ""))
    code = description.split(":")[0].split(" ")[0] if description else ""
    return f"{error}/{code}" if code and code != error else error


def _forwarded(document: Any) -> str | None:
    """The credential the echo upstream received: keymint's token, or None."""
    if not isinstance(document, dict):
        return None
    values = [v for name, v in document.get("headers", []) if name == "authorization"]
    if len(values) != 1 or not values[0].startswith("Bearer "):
        return None
    return str(values[0].removeprefix("Bearer "))


def _access_token(document: Any) -> str | None:
    if isinstance(document, dict) and isinstance(document.get("access_token"), str):
        return str(document["access_token"])
    return None


def _write_client(stack: FaultStack, name: str, svid: Any) -> tuple[str, str]:
    from extauthz.dev.envoy import write_tls

    cert, key = write_tls(stack.directory, name, svid)
    return str(cert), str(key)


# --- figures -------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def failures_by_status(outcomes: Iterable[Outcome]) -> dict[str, int]:
    return dict(sorted(Counter(o.label for o in outcomes if o.failed).items()))


def latency_ms(outcomes: Sequence[Outcome]) -> dict[str, float]:
    seconds = [o.seconds for o in outcomes]
    return {
        "p50_ms": round(percentile(seconds, 0.50) * 1000, 1),
        "p99_ms": round(percentile(seconds, 0.99) * 1000, 1),
        "max_ms": round(max(seconds, default=0.0) * 1000, 1),
        "mean_ms": round(statistics.fmean(seconds) * 1000, 1) if seconds else 0.0,
    }
