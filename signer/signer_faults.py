"""How the coordinator reads a signer's failures: whether it did not answer (unreachable, too slow:
taken back as soon as it answers a probe) or answered wrongly (set aside with back-off), and the
labels its faults are counted under (`keymint_signer_faults_total`)."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from signer.service import REFUSING_SERVICE


@dataclass(frozen=True, slots=True)
class SignerFault:
    """Why a call to a signer failed; `misbehaved` when the signer answered, but wrongly (as
    opposed to not answering in time, or not at all); `late` when it only missed the deadline."""

    reason: str
    misbehaved: bool
    late: bool = False

    @classmethod
    def of(cls, exc: grpc.aio.AioRpcError) -> SignerFault:
        code, details = exc.code(), exc.details() or ""
        unreachable = code in _UNREACHABLE and not details.startswith(REFUSING_SERVICE)
        late = code == grpc.StatusCode.DEADLINE_EXCEEDED
        return cls(describe(exc), misbehaved=not unreachable, late=late)


# Guard rules about the token's times: a signer refusing by one of them while t others sign the
# same message has a clock that is off (signer.guard.RULES).
CLOCK_RULES = frozenset({"iat_skew", "nbf_skew", "expired"})

# Status codes of a signer that did not answer (transport failures, deadlines); any other status,
# or UNAVAILABLE with details starting `REFUSING_SERVICE` (a signer saying it cannot serve, e.g.
# its audit log is unwritable), is an answer.
_UNREACHABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


def describe(exc: BaseException) -> str:
    """A failure as the log and `QuorumUnavailable` name it."""
    if isinstance(exc, grpc.aio.AioRpcError):
        code = exc.code()
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return "too slow: missed the deadline"
        return f"{code.name.lower()}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}"


def reason_label(reason: str) -> str:
    """The `reason` label a fault is counted under."""
    if "invalid signature share" in reason:
        return "invalid_share"
    if "is its clock wrong" in reason:
        return "clock"
    if REFUSING_SERVICE in reason:
        return "refusing_service"
    if "deadline" in reason:
        return "slow"
    if "unavailable" in reason:
        return "unavailable"
    return "error"
