"""The coordinator: drives any t of the n signers to a verified Ed25519 signature.

It learns the group keys from the signers themselves and adopts a key only when at least t
signers report byte-identical public key packages for it, t being the larger of the key's own
threshold and the deployment's (`threshold`, the gateway's FROST_T); a key reported by fewer is
ignored, and the signers that reported it are named in the log. A key whose own threshold is below
the deployment's is refused however many report it (`signer.key_agreement`). It signs with
whichever adopted key a message's header names (`kid`), using only signers that reported that
key's adopted package.

It keeps a pool of round-one commitments from each signer, refilled in the background, so one
signature is one round trip to t signers in parallel. A signer that is down, slow past the attempt
deadline, or returns a share that fails verification is named, set aside, and the signature is
retried with another subset. A signature fails only when fewer than t signers can serve, and then
fails at once with an error that says so.

A signer that refuses a token by a rule about its times (`CLOCK_RULES`) while t others sign it
has a clock that is off: it is set aside with back-off too, rather than asked again and again.

A set-aside signer is probed with GetInfo every `probe_interval` (one small call, no nonces). One
that was unreachable or too slow comes back as soon as it answers; one that answered wrongly (an
invalid share, another identifier, a refusal to serve) stays aside for its exponential back-off,
unless it answers with a new boot id: it restarted, and a new process is given a new chance. Either
way the pool is refilled at once, so a restarted signer is a spare again within a probe interval
of being ready. A signer in service is asked the same every `watch_interval`, so one that is not
picked for signatures (a spare) is still known to be there, or not, and a restart is noticed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import grpc

from signer import tracing
from signer.devca import TlsFiles, signer_name
from signer.errors import SignerError
from signer.frost import (
    FrostError,
    InvalidSignatureShare,
    PublicKeyPackage,
    SignatureShare,
    SigningCommitment,
    finish_aggregate,
    prepare_aggregate,
)
from signer.frost.encoding import (
    decode_signature_share,
    decode_signing_commitment,
    encode_commitment_list,
)
from signer.frost.group import deserialize_scalar
from signer.key_agreement import (
    IGNORED_REASONS,
    THRESHOLD_BELOW_DEPLOYMENT,
    adopt,
    readable_reports,
)
from signer.keystate import header_kid
from signer.metrics import (
    COMMITMENT_POOL,
    KEY_PACKAGES_IGNORED,
    SIGNER_FAULTS,
    SIGNER_UP,
    THRESHOLD_SIGN_SECONDS,
    THRESHOLD_SIGNATURES,
)
from signer.observability import current_request_id
from signer.proto import signer_pb2, signer_pb2_grpc
from signer.signer_faults import (
    CLOCK_RULES,
    SignerFault,
    describe,
    reason_label,
)
from signer.tls import secure_channel

log = logging.getLogger(__name__)


class CoordinatorConfigError(SignerError):
    """The coordinator was built with settings it cannot work with."""


class QuorumUnavailable(SignerError):
    """Fewer than t signers can serve; `unavailable` names each other signer and why."""

    def __init__(
        self, needed: int, available: int, unavailable: dict[int, str], *, when: str = ""
    ) -> None:
        self.needed = needed
        self.available = available
        self.unavailable = unavailable
        reasons = "; ".join(f"signer {i}: {why}" for i, why in sorted(unavailable.items()))
        super().__init__(
            f"signing quorum unavailable{when}: {available} signer(s) can serve, {needed} needed"
            + (f" ({reasons})" if reasons else "")
        )


class SigningRefused(SignerError):
    """Signers' guards refused the message; `refusals` maps signer to the rule it cited."""

    def __init__(self, refusals: dict[int, str]) -> None:
        self.refusals = refusals
        rules = "; ".join(f"signer {i}: {r}" for i, r in sorted(refusals.items()))
        super().__init__(f"signers refused to sign: {rules}")

    @property
    def rule(self) -> str:
        return next(iter(self.refusals.values())).split(":", 2)[1] if self.refusals else ""


class UnknownKey(SignerError):
    """A message names a key the coordinator has not adopted; nothing was sent to a signer."""

    def __init__(self, kid: str | None, adopted: Collection[str]) -> None:
        self.kid = kid
        shown = "no kid" if kid is None else f"kid {kid[:64]!r}"
        super().__init__(
            f"the message names {shown}, not a key at least t signers agree on "
            f"(adopted: {', '.join(sorted(adopted)) or 'none'})"
        )


@dataclass(frozen=True, slots=True)
class SignerEndpoint:
    identifier: int
    address: str
    name: str = ""  # the certificate name; devca.signer_name(identifier) by default

    @property
    def server_name(self) -> str:
        return self.name or signer_name(self.identifier)


@dataclass(frozen=True, slots=True)
class SignOutcome:
    signature: bytes
    signers: tuple[int, ...]
    attempts: int


@dataclass(frozen=True, slots=True)
class CoordinatorSettings:
    attempt_timeout: float = 0.5  # one round trip; a signer slower than this is set aside
    pool_target: int = 64  # commitments to hold per signer
    refill_below: int = 24
    refill_batch: int = 8  # small batches keep each signer's event loop responsive
    announce: bool = True  # let peers validate commitments before they are used
    commitment_margin: float = 30.0  # drop commitments this long before the signer expires them
    backoff_base: float = 0.5  # a signer that answered wrongly stays aside this long, doubling
    backoff_max: float = 30.0
    probe_interval: float = 0.2  # how often a set-aside signer is asked whether it is back
    watch_interval: float = 1.0  # how often a signer in service is asked whether it is still there


@dataclass(slots=True)
class _Member:
    endpoint: SignerEndpoint
    stub: signer_pb2_grpc.SignerStub
    channel: grpc.aio.Channel
    pool: deque[tuple[SigningCommitment, float]] = field(default_factory=deque)
    boot_id: bytes = b""
    down_until: float = 0.0
    failures: int = 0
    misbehaved: bool = False  # set aside for a wrong answer: only its back-off or a restart ends it
    late: bool = False  # set aside for missing a deadline: it may well answer the next probe
    reason: str = "not yet contacted"
    latency: float = 0.0
    refill: asyncio.Task[None] | None = None
    watch: asyncio.Task[None] | None = None
    reported: dict[str, bytes] = field(default_factory=dict)  # kid -> encoded package

    def holds(self, kid: str, encoded: bytes) -> bool:
        return self.reported.get(kid) == encoded

    @property
    def identifier(self) -> int:
        return self.endpoint.identifier

    @property
    def label(self) -> str:
        return str(self.endpoint.identifier)

    @property
    def span_attributes(self) -> dict[str, str | int]:
        return {"keymint.signer": self.endpoint.identifier, "rpc.method": "Sign"}


class Coordinator:
    def __init__(
        self,
        *,
        endpoints: Sequence[SignerEndpoint],
        tls: TlsFiles,
        threshold: int,
        settings: CoordinatorSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        """`threshold` is the deployment's t (FROST_T): no key is adopted that fewer signers
        could sign with, whatever its package says. It has no default: a coordinator that did
        not know it would take the package's word, which any two colluding signers can write."""
        if threshold < 2:
            raise CoordinatorConfigError(
                f"the deployment's threshold is {threshold}; it must be at least 2 (one signer "
                "must never sign alone)"
            )
        self._threshold = threshold
        self._settings = settings or CoordinatorSettings()
        self._clock = clock
        self._rng = rng or random.SystemRandom()
        self._packages: dict[str, PublicKeyPackage] = {}
        self._encoded: dict[str, bytes] = {}
        self._members: dict[int, _Member] = {}
        for endpoint in endpoints:
            channel = secure_channel(endpoint.address, tls, endpoint.server_name)
            self._members[endpoint.identifier] = _Member(
                endpoint,
                signer_pb2_grpc.SignerStub(channel),  # type: ignore[no-untyped-call]
                channel,
            )
        self._closed = False
        self._refilled = asyncio.Event()

    @property
    def threshold(self) -> int:
        """The deployment's t: the fewest signers any adopted key needs."""
        return self._threshold

    @property
    def packages(self) -> Mapping[str, PublicKeyPackage]:
        """The adopted keys' public key packages, by kid."""
        return MappingProxyType(self._packages)

    def package_for(self, kid: str) -> PublicKeyPackage:
        package = self._packages.get(kid)
        if package is None:
            raise UnknownKey(kid, self._packages)
        return package

    async def start(self) -> None:
        """Learn the keys from the signers (`refresh_keys`) and fill the pools."""
        await self.refresh_keys(at_start=True)
        self.keep_filled()
        await self._wait_for_pools()

    def keep_filled(self) -> None:
        """From now on, keep every signer's pool of commitments filled in the background, and
        ask each signer in service every `watch_interval` whether it is still there."""
        for member in self._members.values():
            self._kick_refill(member)
            if member.watch is None or member.watch.done():
                member.watch = asyncio.create_task(self._watch(member))

    async def refresh_keys(self, *, at_start: bool = False) -> Mapping[str, PublicKeyPackage]:
        """Ask every signer which keys it holds; adopt each package that at least t signers
        report byte-identically (t: the larger of its threshold and the deployment's; a package
        below the deployment's threshold is never adopted). Returns the adopted packages by kid.

        A key adopted earlier stays adopted when signers that hold it cannot be reached now (they
        keep what they reported last); a newer package for it replaces it once t report that one.
        Raises KeyAgreementError when no key at all is adopted (`signer.key_agreement`).
        """
        infos = await asyncio.gather(
            *(self._info(m) for m in self._members.values()), return_exceptions=True
        )
        unreachable: dict[int, str] = {}
        for member, info in zip(self._members.values(), infos, strict=True):
            if isinstance(info, BaseException):
                why = describe(info)
                unreachable[member.identifier] = why
                if at_start:
                    self._mark_down(member, f"unreachable at start: {why}")
                continue
            identifier = deserialize_scalar(info.identifier)
            if identifier != member.identifier:
                unreachable[member.identifier] = f"reports identifier {identifier}"
                self._mark_down(member, f"reports identifier {identifier}", misbehaved=True)
                continue
            if member.boot_id and info.boot_id != member.boot_id:
                member.pool.clear()  # it restarted: the commitments it gave are void
            member.boot_id = info.boot_id
            keys = ((key.kid, key.public_key_package) for key in info.keys)
            member.reported, problems = readable_reports(member.identifier, keys)
            for problem in problems:
                log.warning("signer %s reports %s", member.label, problem)
        self._adopt(unreachable)
        return self.packages

    def _adopt(self, unreachable: dict[int, str]) -> None:
        adoption = adopt(
            {m.identifier: m.reported for m in self._members.values()},
            self._encoded,
            unreachable,
            threshold=self._threshold,
        )
        counts = dict.fromkeys(IGNORED_REASONS, 0)
        for ignored in adoption.ignored:
            counts[ignored.reason] += 1
            if ignored.reason == THRESHOLD_BELOW_DEPLOYMENT:
                log.warning(
                    "key %s is not adopted: signers %s report this package of it, but its "
                    "threshold %d is below this deployment's %d: fewer signers than the "
                    "deployment promises could sign with it",
                    ignored.kid,
                    list(ignored.signers),
                    ignored.own_threshold,
                    self._threshold,
                )
            else:
                log.warning(
                    "key %s is not adopted: signers %s report this package of it, but it needs "
                    "%d that agree",
                    ignored.kid,
                    list(ignored.signers),
                    ignored.needed,
                )
        for reason, count in counts.items():
            KEY_PACKAGES_IGNORED.labels(reason).set(count)
        for kid, count in adoption.newly_adopted.items():
            log.info("adopted key %s: %d signers agree on its package", kid, count)
        for kid, signers in adoption.differing.items():
            log.warning(
                "signers %s report key %s with a package other than the one adopted; they will "
                "not sign with it",
                list(signers),
                kid,
            )
        self._encoded = dict(adoption.encoded)
        self._packages = adoption.packages()

    async def close(self) -> None:
        self._closed = True
        tasks = [t for m in self._members.values() for t in (m.refill, m.watch) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for member in self._members.values():  # only once nothing can start a call on them
            await member.channel.close()

    def ready(self, kid: str | None = None) -> bool:
        """Whether a signature by key `kid` (by any adopted key if None) can start right now."""
        kids = list(self._encoded) if kid is None else [kid]
        for candidate in kids:
            usable, needed = self.quorum(candidate)
            if needed and usable >= needed:
                return True
        return False

    def quorum(self, kid: str) -> tuple[int, int]:
        """(signers that could sign with key `kid` right now, signers it needs); (0, 0) for a
        key not adopted."""
        encoded = self._encoded.get(kid)
        if encoded is None:
            return 0, 0
        now = self._clock()
        usable = sum(
            1
            for m in self._members.values()
            if m.down_until <= now and m.pool and m.holds(kid, encoded)
        )
        return usable, self._packages[kid].min_participants

    def health(self) -> dict[int, str]:
        now = self._clock()
        return {
            i: ("up" if m.down_until <= now else f"down: {m.reason}")
            for i, m in sorted(self._members.items())
        }

    async def sign(
        self,
        message: bytes,
        *,
        evidence: signer_pb2.Evidence | None = None,
        request_id: str = "",
        timeout: float = 2.0,
    ) -> SignOutcome:
        started = self._clock()
        kid = header_kid(message)
        if kid is None or kid not in self._packages:
            THRESHOLD_SIGNATURES.labels("unknown_key").inc()
            raise UnknownKey(kid, self._packages)
        try:
            # Stop retrying a little before the caller's deadline, so even a failure is answered
            # within it rather than just after.
            margin = min(0.05, 0.05 * timeout)
            outcome = await self._sign(
                kid, message, evidence, request_id, started + timeout - margin
            )
        except QuorumUnavailable:
            THRESHOLD_SIGNATURES.labels("no_quorum").inc()
            raise
        except SigningRefused:
            THRESHOLD_SIGNATURES.labels("refused").inc()
            raise
        THRESHOLD_SIGNATURES.labels("ok").inc()
        THRESHOLD_SIGN_SECONDS.observe(self._clock() - started)
        return outcome

    async def _sign(
        self,
        kid: str,
        message: bytes,
        evidence: signer_pb2.Evidence | None,
        request_id: str,
        deadline: float,
    ) -> SignOutcome:
        package = self._packages[kid]
        t = package.min_participants
        refusals: dict[int, str] = {}
        # Only signers that reported the adopted package of this key sign with it.
        excluded = {
            m.identifier for m in self._members.values() if not m.holds(kid, self._encoded[kid])
        }
        attempts = 0
        while True:
            now = self._clock()
            exclude = excluded | refusals.keys()
            chosen = self._choose(t, now, exclude=exclude)
            if (
                chosen is None
                and self._count_up(now, exclude, late_too=True) >= t
                and now < deadline
            ):
                # Enough signers are up with their pools just empty, or were set aside only for
                # missing a deadline (on a busy machine, everything is late): wait, within the
                # deadline, for a refill or for them to answer a probe.
                self._refilled.clear()
                with contextlib.suppress(TimeoutError):  # not wait_for: CPython gh-86296
                    async with asyncio.timeout(min(deadline - now, self._settings.probe_interval)):
                        await self._refilled.wait()
                continue
            if chosen is None:
                if refusals:
                    raise SigningRefused(refusals)
                raise QuorumUnavailable(t, self._count_usable(now, exclude), self._why_not(kid))
            if now >= deadline:
                raise QuorumUnavailable(
                    t,
                    self._count_usable(now, exclude),
                    self._why_not(kid),
                    when=" by the deadline",
                )
            attempts += 1
            commitments = sorted((m.pool.popleft()[0] for m in chosen), key=lambda c: c.identifier)
            for m in chosen:
                COMMITMENT_POOL.labels(m.label).set(len(m.pool))
            request = signer_pb2.SignRequest(
                message=message,
                commitment_list=encode_commitment_list(commitments),
                request_id=request_id,
            )
            if evidence is not None:
                request.evidence.CopyFrom(evidence)
            timeout = max(0.001, min(self._settings.attempt_timeout, deadline - now))
            calls = [asyncio.ensure_future(self._call_sign(m, request, timeout)) for m in chosen]
            await asyncio.sleep(0)  # let the calls go out before computing anything
            # Runs while the signers work: binding factors and group commitment need no shares.
            prepared = prepare_aggregate(commitments, message, package)
            results = await asyncio.gather(*calls)
            shares: list[SignatureShare] = []
            for member, result in zip(chosen, results, strict=True):
                if isinstance(result, SignatureShare):
                    shares.append(result)
                elif isinstance(result, SignerFault):
                    self._mark_down(
                        member, result.reason, misbehaved=result.misbehaved, late=result.late
                    )
                elif result.startswith("guard:"):
                    refusals[member.identifier] = result
                else:  # commitment_unknown
                    # The signer restarted or expired our commitments: forget them, keep it.
                    member.pool.clear()
                    SIGNER_FAULTS.labels(member.label, "commitment_unknown").inc()
                    self._kick_refill(member)
            if len(shares) < t:
                continue
            try:
                signature = finish_aggregate(prepared, shares)
            except InvalidSignatureShare as bad:
                for culprit in bad.culprits:
                    self._mark_down(
                        self._members[culprit],
                        "returned an invalid signature share",
                        misbehaved=True,
                    )
                continue
            for member in chosen:
                self._mark_up(member)
            for identifier, refusal in refusals.items():
                if refusal.split(":", 2)[1] in CLOCK_RULES:
                    # t others signed this very message: the refuser's clock is off, not the
                    # message's times, and it would refuse every token until that is fixed.
                    self._mark_down(
                        self._members[identifier],
                        f"refused a token that {t} others signed ({refusal[:120]}): is its "
                        "clock wrong?",
                        misbehaved=True,
                    )
            return SignOutcome(signature, tuple(c.identifier for c in commitments), attempts)

    async def _call_sign(
        self, member: _Member, request: signer_pb2.SignRequest, timeout: float
    ) -> SignatureShare | SignerFault | str:
        """The share; or a failure; or the signer's refusal ("guard:..." or
        "commitment_unknown...") as it sent it."""
        started = self._clock()
        try:
            with tracing.span(tracing.SIGN_SPAN, client=True, attributes=member.span_attributes):
                response = await member.stub.Sign(
                    request, timeout=timeout, metadata=_outgoing_metadata()
                )
            share = decode_signature_share(response.signature_share)
        except grpc.aio.AioRpcError as exc:
            details = exc.details() or ""
            if exc.code() == grpc.StatusCode.PERMISSION_DENIED and details.startswith("guard:"):
                return details
            if exc.code() == grpc.StatusCode.FAILED_PRECONDITION and details.startswith(
                "commitment_unknown"
            ):
                return details
            return SignerFault.of(exc)
        except FrostError as exc:
            return SignerFault(f"sent an undecodable signature share: {exc}", misbehaved=True)
        if share.identifier != member.identifier:
            return SignerFault(f"sent a share for participant {share.identifier}", misbehaved=True)
        member.latency = 0.8 * member.latency + 0.2 * (self._clock() - started)
        return share

    def _choose(self, t: int, now: float, exclude: Collection[int]) -> list[_Member] | None:
        usable = []
        for member in self._members.values():
            if member.identifier in exclude or member.down_until > now:
                continue
            while member.pool and member.pool[0][1] <= now:
                member.pool.popleft()
            if member.pool:
                usable.append(member)
            if len(member.pool) < self._settings.refill_below:
                self._kick_refill(member)
        if len(usable) < t:
            return None
        # Fastest first, with jitter so load spreads across equally fast signers.
        usable.sort(key=lambda m: m.latency * (1 + 0.5 * self._rng.random()))
        return usable[:t]

    def _count_up(self, now: float, exclude: Collection[int], *, late_too: bool = False) -> int:
        return sum(
            1
            for m in self._members.values()
            if m.identifier not in exclude and (m.down_until <= now or (late_too and m.late))
        )

    def _count_usable(self, now: float, exclude: Collection[int]) -> int:
        return sum(
            1
            for m in self._members.values()
            if m.down_until <= now and m.pool and m.identifier not in exclude
        )

    def _why_not(self, kid: str) -> dict[int, str]:
        now = self._clock()
        why = {}
        for i, m in self._members.items():
            if not m.holds(kid, self._encoded[kid]):
                why[i] = f"does not hold the adopted package of key {kid}"
            elif m.down_until > now:
                why[i] = m.reason
            elif not m.pool:
                why[i] = "no commitments available"
        return why

    def _mark_down(
        self, member: _Member, reason: str, *, misbehaved: bool = False, late: bool = False
    ) -> None:
        """Set `member` aside: for its back-off if it answered wrongly (`misbehaved`), else
        until a probe finds it answering again (`_probe`), and at most its back-off. `late`: it
        missed a deadline, so a signature short of signers may wait for it to answer."""
        member.failures += 1
        backoff = min(
            self._settings.backoff_base * 2 ** (member.failures - 1), self._settings.backoff_max
        )
        member.down_until = self._clock() + backoff
        member.misbehaved = misbehaved
        member.late = late and not misbehaved
        member.reason = reason
        member.pool.clear()
        SIGNER_UP.labels(member.label).set(0)
        SIGNER_FAULTS.labels(member.label, reason_label(reason)).inc()
        COMMITMENT_POOL.labels(member.label).set(0)
        log.warning(
            "signer %s (%s) set aside%s: %s",
            member.identifier,
            member.endpoint.address,
            f" for {backoff:.1f}s" if misbehaved else " until it answers",
            reason,
        )
        self._kick_refill(member)  # which probes it meanwhile

    def _mark_up(self, member: _Member) -> None:
        """A signature with `member`'s share verified: its failures are forgiven."""
        if member.failures:
            log.info("signer %s is serving again", member.identifier)
        member.failures = 0
        member.misbehaved = False
        member.reason = "up"
        SIGNER_UP.labels(member.label).set(1)

    def _kick_refill(self, member: _Member) -> None:
        if member.refill is not None and not member.refill.done():
            return
        if not self._closed:
            member.refill = asyncio.create_task(self._keep_filled(member))

    async def _keep_filled(self, member: _Member) -> None:
        """Top the pool up whenever it runs low; while the signer is set aside, probe it."""
        settings = self._settings
        while not self._closed:
            now = self._clock()
            if member.down_until > now:
                if not await self._probe(member):
                    wait = min(settings.probe_interval, member.down_until - self._clock())
                    await asyncio.sleep(max(wait, 0.0))
                continue
            if len(member.pool) >= settings.pool_target:
                return
            try:
                wanted = min(settings.refill_batch, settings.pool_target - len(member.pool))
                response = await member.stub.Commit(
                    signer_pb2.CommitRequest(count=wanted),
                    timeout=max(settings.attempt_timeout * 4, 1.0),
                )
                fresh = await _decode_commitments(response.commitments)
            except grpc.aio.AioRpcError as exc:
                failure = SignerFault.of(exc)
                self._mark_down(
                    member,
                    f"commitments unavailable: {failure.reason}",
                    misbehaved=failure.misbehaved,
                    late=failure.late,
                )
                continue
            except FrostError as exc:
                self._mark_down(member, f"sent a bad commitment: {exc}", misbehaved=True)
                continue
            if any(c.identifier != member.identifier for c in fresh):
                self._mark_down(
                    member, "sent commitments under another identifier", misbehaved=True
                )
                continue
            if member.down_until > self._clock():
                continue  # set aside while the batch was on its way: not for use now
            if member.boot_id and response.boot_id != member.boot_id:
                log.info("signer %s restarted; its old commitments are void", member.identifier)
                member.pool.clear()
                member.failures, member.misbehaved, member.latency = 0, False, 0.0
            member.boot_id = response.boot_id
            expires = self._clock() + response.ttl_seconds - settings.commitment_margin
            member.pool.extend((c, expires) for c in fresh)
            self._refilled.set()
            COMMITMENT_POOL.labels(member.label).set(len(member.pool))
            if member.reason != "up":
                member.reason = "up"
                SIGNER_UP.labels(member.label).set(1)
            if settings.announce:
                self._announce(member, list(response.commitments))

    async def _probe(self, member: _Member) -> bool:
        """Ask a set-aside signer who it is (GetInfo: no nonces, no crypto). True when it is
        back in service: it answers and was only unreachable or slow, or it answers with a new
        boot id (a new process, whatever its predecessor did)."""
        try:
            info = await self._info(member, timeout=self._probe_timeout())
        except grpc.aio.AioRpcError:
            member.late = False  # not just late: it does not answer a probe either
            return False
        if deserialize_scalar(info.identifier) != member.identifier:
            return False
        restarted = bool(member.boot_id) and info.boot_id != member.boot_id
        if member.misbehaved and not restarted:
            return False
        if restarted:
            self._restarted(member, info)
        elif not member.reported:
            self._learn_keys(member, info)
        member.boot_id = info.boot_id
        member.down_until = self._clock()
        log.info(
            "signer %s answers again%s: back in service",
            member.identifier,
            " (restarted)" if restarted else "",
        )
        return True

    async def _watch(self, member: _Member) -> None:
        """Ask a signer in service who it is, every `watch_interval`: one that cannot be reached
        (or answers wrongly) is set aside and probed; one that answers with a new boot id
        restarted, so the commitments held for it are void. A slow answer is no evidence here
        (a busy machine is slow everywhere): signatures' own deadlines judge slowness."""
        settings = self._settings
        while not self._closed:
            await asyncio.sleep(settings.watch_interval)
            if member.down_until > self._clock():
                continue  # set aside: `_keep_filled` probes it
            try:
                info = await self._info(member, timeout=self._probe_timeout() * 2)
            except grpc.aio.AioRpcError as exc:
                late = exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                if not late and member.down_until <= self._clock():
                    failure = SignerFault.of(exc)
                    self._mark_down(
                        member, f"health probe: {failure.reason}", misbehaved=failure.misbehaved
                    )
                continue
            if member.boot_id and info.boot_id != member.boot_id:
                self._restarted(member, info)
                self._kick_refill(member)

    def _probe_timeout(self) -> float:
        """Long enough for a busy machine: a probe is not on any request's path, and a hung
        signer answers the probe already waiting as soon as it resumes."""
        return max(self._settings.attempt_timeout * 2, 1.0)

    def _restarted(self, member: _Member, info: signer_pb2.InfoResponse) -> None:
        """`member` answered with a new boot id: a new process, with none of the old one's
        commitments, failures or latency."""
        log.info("signer %s restarted; its old commitments are void", member.identifier)
        member.pool.clear()
        member.failures, member.misbehaved = 0, False
        member.latency = 0.0  # no history: the next signature tries it
        member.boot_id = info.boot_id
        self._learn_keys(member, info)
        COMMITMENT_POOL.labels(member.label).set(0)

    def _learn_keys(self, member: _Member, info: signer_pb2.InfoResponse) -> None:
        """What a signer that restarted (or was never reached) holds now; adoption is redone
        only if that changed (t signers must still agree on any package)."""
        keys = ((key.kid, key.public_key_package) for key in info.keys)
        reported, problems = readable_reports(member.identifier, keys)
        for problem in problems:
            log.warning("signer %s reports %s", member.label, problem)
        if reported != member.reported:
            member.reported = reported
            self._adopt({})

    def _announce(self, source: _Member, commitments: list[bytes]) -> None:
        """Tell the other signers about fresh commitments so they validate them off the path."""
        if self._closed:
            return
        request = signer_pb2.AnnounceRequest(commitments=commitments)
        for member in self._members.values():
            if member is not source and member.down_until <= self._clock():
                task = asyncio.ensure_future(member.stub.Announce(request, timeout=2.0))
                task.add_done_callback(_ignore_failure)

    async def _wait_for_pools(self, timeout: float = 5.0) -> None:
        deadline = self._clock() + timeout
        while not self.ready() and self._clock() < deadline:
            await asyncio.sleep(0.01)

    async def _info(self, member: _Member, timeout: float | None = None) -> signer_pb2.InfoResponse:
        response: signer_pb2.InfoResponse = await member.stub.GetInfo(
            signer_pb2.InfoRequest(),
            timeout=timeout or max(self._settings.attempt_timeout * 4, 1.0),
        )
        return response


async def _decode_commitments(encoded: Sequence[bytes]) -> list[SigningCommitment]:
    """Validate a batch (two subgroup checks each), yielding so requests are not held up."""
    decoded = []
    for i, data in enumerate(encoded):
        decoded.append(decode_signing_commitment(data))
        if i % 4 == 3:
            await asyncio.sleep(0)
    return decoded


def _outgoing_metadata() -> tuple[tuple[str, str], ...]:
    """What the signer learns of the request beside the message: its trace context (when
    tracing) and Envoy's request id (for its log lines), nothing else."""
    request_id = current_request_id()
    extra = (("x-request-id", request_id),) if request_id else ()
    return (*tracing.outgoing_metadata(), *extra)


def _ignore_failure(task: asyncio.Future[object]) -> None:
    if not task.cancelled():
        task.exception()
