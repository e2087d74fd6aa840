"""Wall-clock timers around named functions of a running gateway or signer, for profile_mint.py.

`install(targets)` wraps each `(owner, attribute, label)` so every call's duration is kept (in
milliseconds) under its label, and times every garbage collection; a thread writes every label's
samples as JSON to `PHASE_TIMER_FILE` twice a second. Benchmark tooling only: nothing in `signer`
or `extauthz` imports it. Experiments, each off unless its variable is set: `PHASE_TIMER_UVLOOP`
(run the process on uvloop, which must be installed), `PHASE_TIMER_SWITCH_INTERVAL` (seconds, for
`sys.setswitchinterval`), `PHASE_TIMER_GC_FREEZE` (`gc.freeze()` three seconds after start).
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

SAMPLES: defaultdict[str, list[float]] = defaultdict(list)


def _wrap(function: Callable[..., Any], label: str) -> Callable[..., Any]:
    samples = SAMPLES[label]
    clock = time.perf_counter
    if inspect.iscoroutinefunction(function):

        @functools.wraps(function)
        async def timed_async(*args: Any, **kwargs: Any) -> Any:
            started = clock()
            try:
                return await function(*args, **kwargs)
            finally:
                samples.append((clock() - started) * 1000)

        return timed_async

    @functools.wraps(function)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = clock()
        try:
            return function(*args, **kwargs)
        finally:
            samples.append((clock() - started) * 1000)

    return timed


def install(targets: Iterable[tuple[object, str, str]]) -> None:
    """Wrap every target and start writing the samples to PHASE_TIMER_FILE."""
    if os.environ.get("PHASE_TIMER_UVLOOP"):  # an experiment: uvloop's event loop
        import uvloop

        uvloop.install()
    if os.environ.get("PHASE_TIMER_SWITCH_INTERVAL"):  # an experiment: sys.setswitchinterval
        import sys

        sys.setswitchinterval(float(os.environ["PHASE_TIMER_SWITCH_INTERVAL"]))
    _time_gc()
    for owner, attribute, label in targets:
        if hasattr(owner, attribute):  # an older tree may lack one (a baseline run)
            setattr(owner, attribute, _wrap(getattr(owner, attribute), label))
    path = os.environ.get("PHASE_TIMER_FILE")
    if path:
        threading.Thread(target=_dump_forever, args=(Path(path),), daemon=True).start()


def _time_gc() -> None:
    """Each garbage collection's pause, under `gc gen<N>`."""
    import gc

    started = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            SAMPLES[f"gc gen{info['generation']} (pause)"].append(
                (time.perf_counter() - started[0]) * 1000
            )

    gc.callbacks.append(callback)
    if os.environ.get("PHASE_TIMER_GC_FREEZE"):  # an experiment: gc.freeze() once started
        threading.Timer(3.0, gc.freeze).start()


def _dump_forever(path: Path) -> None:
    while True:
        time.sleep(0.5)
        data = {label: list(samples) for label, samples in list(SAMPLES.items())}
        scratch = path.with_suffix(".tmp")
        scratch.write_text(json.dumps(data))
        scratch.replace(path)


def gateway_targets() -> list[tuple[object, str, str]]:
    import extauthz.server.mint as mint
    import extauthz.server.pipeline as pipeline
    import signer.audit as audit
    import signer.coordinator as coordinator
    from extauthz.identity.jwt_verifier import JwtVerifier
    from extauthz.policy.engine import PolicyEngine

    return [
        (pipeline.Pipeline, "check", "gw.check (whole Check handler)"),
        (pipeline.Identifier, "identify", "gw.identify (verify the OIDC JWT)"),
        (JwtVerifier, "verify", "gw.jwt_verify"),
        (PolicyEngine, "judge", "gw.policy judge"),
        (pipeline.Pipeline, "_rate_limit", "gw.rate limit"),
        (mint.Minter, "mint", "gw.mint (sign + record + cache)"),
        (mint.Minter, "_mint", "gw.mint: claims + threshold sign"),
        (mint, "evidence_message", "gw.evidence message"),
        (coordinator.Coordinator, "sign", "gw.coordinator sign"),
        (coordinator.Coordinator, "_call_sign", "gw.Sign RPC (per signer)"),
        (coordinator, "prepare_aggregate", "gw.prepare_aggregate"),
        (coordinator, "finish_aggregate", "gw.finish_aggregate (verify)"),
        (pipeline.Pipeline, "_record_mint", "gw.audit mint record (fsync)"),
        (audit.AuditLog, "_append_prepared", "gw.audit write+fsync (thread)"),
        (audit.AuditLog, "append_batch", "gw.audit append_batch (thread)"),
        (pipeline, "to_check_response", "gw.to_check_response"),
        (pipeline.Pipeline, "_record", "gw.record decision (log)"),
        (pipeline.HotCache, "put", "gw.hot cache put"),
    ]


def signer_targets() -> list[tuple[object, str, str]]:
    import signer.audit as audit
    import signer.guard as guard
    import signer.server as server
    import signer.service as service

    targets: list[tuple[object, str, str]] = [
        (service.SignerService, "_sign", "sg.Sign handler"),
        (service, "decode_commitment_list", "sg.decode commitment list"),
        (service, "require_peer", "sg.require_peer"),
        (server.KeyedGuard, "check", "sg.guard (all rules)"),
        (guard.Guard, "check_async", "sg.guard check_async"),
        (service, "sign", "sg.frost sign"),
        (audit.AsyncAuditLog, "append", "sg.audit append (awaited)"),
        (audit.AuditLog, "_append_prepared", "sg.audit write+fsync (thread)"),
        (audit.AuditLog, "append_batch", "sg.audit append_batch (thread)"),
    ]
    try:
        import extauthz.guard_checker as checker
        from extauthz.identity.jwt_verifier import JwtVerifier
        from extauthz.policy.engine import PolicyEngine
    except ImportError:
        return targets
    return [
        *targets,
        (checker.GatewayEvidenceChecker, "check", "sg.evidence checker (gateway code)"),
        (JwtVerifier, "verify", "sg.jwt_verify"),
        (PolicyEngine, "evaluate", "sg.policy evaluate"),
    ]
