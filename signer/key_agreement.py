"""Which group keys the coordinator adopts: those at least t signers report identically. Sans-IO.

Each signer reports the keys it holds (kid and encoded public key package). t is the larger of the
package's own threshold (`min_participants`) and the deployment's (the gateway's FROST_T): a package
is adopted for its kid only when at least t signers report it byte for byte, each of them a
participant in it; a package reported by fewer is ignored, and its reporters are named. A package
whose own threshold is below the deployment's is refused however many signers report it: with it,
fewer signers than the deployment promises could sign (two colluding signers of a 3-of-5 group can
deal themselves a 2-of-2 key and both report it; counted against its own threshold it would pass).
If two packages of one kid both reach t (signers halfway through a refresh), the one more signers
report wins. A kid adopted earlier keeps its package until another one reaches t: signers that
cannot be reached now do not un-adopt a key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from signer.errors import SignerError
from signer.frost import FrostError, PublicKeyPackage
from signer.frost.encoding import decode_public_key_package
from signer.token import kid_for


class KeyAgreementError(SignerError):
    """No group key is reported identically by as many signers as it needs.

    `reports` maps each kid reported to the signers that reported it (any package), `needed` each
    kid to the signers it needs (the larger of its threshold and the deployment's), `refused`
    each kid whose package's threshold is below the deployment's `threshold` to that package
    threshold, `unreachable` each signer that did not answer to why.
    """

    def __init__(
        self,
        reports: dict[str, list[int]],
        needed: dict[str, int],
        unreachable: Mapping[int, str],
        *,
        refused: Mapping[str, int],
        threshold: int,
    ) -> None:
        self.reports = reports
        self.needed = needed
        self.refused = dict(refused)
        self.threshold = threshold
        self.unreachable = dict(unreachable)

        def why(kid: str) -> str:
            if kid in self.refused:
                return (
                    f"refused: its threshold {self.refused[kid]} is below the deployment's "
                    f"{threshold}"
                )
            return f"needs {needed[kid]}"

        keys = "; ".join(
            f"{kid} reported by {len(signers)} signer(s) {signers}, {why(kid)}"
            for kid, signers in sorted(reports.items())
        )
        down = "; ".join(f"signer {i}: {why}" for i, why in sorted(unreachable.items()))
        super().__init__(
            "no group key is reported identically by as many signers as it needs: "
            + (keys or "no signer reported a key")
            + (f" (unreachable: {down})" if down else "")
        )


TOO_FEW_SIGNERS = "too_few_signers"
THRESHOLD_BELOW_DEPLOYMENT = "threshold_below_deployment"
IGNORED_REASONS = (TOO_FEW_SIGNERS, THRESHOLD_BELOW_DEPLOYMENT)


@dataclass(frozen=True, slots=True)
class Ignored:
    """A package of `kid` that only `signers` reported; it needed `needed` signers (the larger of
    its own threshold `own_threshold` and the deployment's). `reason` is TOO_FEW_SIGNERS, or
    THRESHOLD_BELOW_DEPLOYMENT for a package refused however many report it."""

    kid: str
    signers: tuple[int, ...]
    needed: int
    own_threshold: int
    reason: str = TOO_FEW_SIGNERS


@dataclass(frozen=True, slots=True)
class Adoption:
    """The adopted packages (encoded, by kid), what was ignored, and who reports another package
    of an adopted kid (they must not sign with it)."""

    encoded: Mapping[str, bytes]
    newly_adopted: Mapping[str, int] = field(default_factory=dict)  # kid -> signers agreeing
    ignored: tuple[Ignored, ...] = ()
    differing: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    def packages(self) -> dict[str, PublicKeyPackage]:
        return {kid: decode_public_key_package(e) for kid, e in self.encoded.items()}


def readable_reports(
    identifier: int, keys: Iterable[tuple[str, bytes]]
) -> tuple[dict[str, bytes], list[str]]:
    """What signer `identifier` reports that can count: packages that decode, whose kid is their
    group key's and in which it is a participant. Also the problems with the rest."""
    reported: dict[str, bytes] = {}
    problems: list[str] = []
    for claimed_kid, encoded in keys:
        try:
            package = decode_public_key_package(encoded)
        except FrostError as exc:
            problems.append(f"an unreadable key package: {exc}")
            continue
        kid = kid_for(package.group_public_key)
        if claimed_kid != kid:
            problems.append(f"key {claimed_kid[:64]!r} with the package of another key, {kid}")
            continue
        if identifier not in package.verifying_shares:
            problems.append(f"key {kid} with a package in which it holds no share")
            continue
        reported[kid] = bytes(encoded)
    return reported, problems


def adopt(
    reports: Mapping[int, Mapping[str, bytes]],
    previous: Mapping[str, bytes],
    unreachable: Mapping[int, str],
    *,
    threshold: int,
) -> Adoption:
    """Adopt from `reports` (signer -> kid -> encoded package), keeping `previous` adoptions (made
    under the same `threshold`) no package now overrules. `threshold` is the deployment's t.
    Raises KeyAgreementError when nothing at all is adopted."""
    by_package: dict[bytes, list[int]] = {}
    for signer, keys in sorted(reports.items()):
        for encoded in keys.values():
            by_package.setdefault(encoded, []).append(signer)
    best: dict[str, tuple[int, bytes]] = {}
    by_kid: dict[str, list[int]] = {}
    own_thresholds: dict[str, list[int]] = {}  # a reshare keeps the kid, maybe not the threshold
    ignored: list[Ignored] = []
    for encoded, signers in sorted(by_package.items()):
        package = decode_public_key_package(encoded)
        kid = kid_for(package.group_public_key)
        by_kid.setdefault(kid, []).extend(signers)
        own = package.min_participants
        own_thresholds.setdefault(kid, []).append(own)
        needs = max(own, threshold)
        if own < threshold:
            ignored.append(Ignored(kid, tuple(signers), needs, own, THRESHOLD_BELOW_DEPLOYMENT))
        elif len(signers) < needs:
            ignored.append(Ignored(kid, tuple(signers), needs, own))
        elif kid not in best or len(signers) > best[kid][0]:
            best[kid] = (len(signers), encoded)
    # For the error: what each kid's most easily adopted package needs, or, when the deployment's
    # threshold refuses every package of a kid, the highest threshold among them.
    needed: dict[str, int] = {}
    refused: dict[str, int] = {}
    for kid, owns in own_thresholds.items():
        accepted = [own for own in owns if own >= threshold]
        needed[kid] = min(accepted) if accepted else threshold
        if not accepted:
            refused[kid] = max(owns)
    encoded_by_kid = dict(previous)
    newly = {}
    for kid, (count, encoded) in best.items():
        if encoded_by_kid.get(kid) != encoded:
            newly[kid] = count
        encoded_by_kid[kid] = encoded
    if not encoded_by_kid:
        raise KeyAgreementError(
            {kid: sorted(signers) for kid, signers in by_kid.items()},
            needed,
            unreachable,
            refused=refused,
            threshold=threshold,
        )
    differing = {
        kid: tuple(i for i, keys in sorted(reports.items()) if kid in keys and keys[kid] != chosen)
        for kid, chosen in encoded_by_kid.items()
    }
    return Adoption(
        encoded_by_kid,
        newly,
        tuple(ignored),
        {kid: signers for kid, signers in differing.items() if signers},
    )
