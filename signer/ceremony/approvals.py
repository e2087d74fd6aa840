"""Local approvals: destroying a live key share takes the signer host's operator, not only mTLS.

A ceremony with `replace_existing_key` drops the key a signer holds for a new one: the old key is
gone for good, and with a trusted dealer (on signers started for development) the new one is a key
whose secret the driver knows. So that one stolen credential is not enough, each signer honours
`replace_existing_key` only when the operator of that signer's host has placed an approval in the
signer's state directory:

    signer approve-replace --state-dir /var/lib/keymint --kid <kid> [--valid-for 3600]

The command needs no network: it writes `<state>/approvals/replace-<kid>.json`, naming the kid it
allows to be destroyed and an expiry. The signer checks it when the ceremony begins (refusing at
once, naming the missing approval and the command that makes it) and again at commit, and deletes
it once the new key is installed. An approval for another kid, an expired or malformed one, a
symlink, or one that other users could write, is refused with the reason.

Why local approvals rather than signatures from several operators: a multi-operator scheme needs
key distribution of its own (which operator keys each signer trusts, how they rotate, how many must
sign), and those keys live on workstations that the ceremony driver can reach too. An approval on
each signer's host adds no new party to trust: only someone with write access to a signer host's
state directory can place one, and whoever holds t signer hosts could already sign with their
unsealed shares. Destroying a signer's share so takes the operator's mTLS key AND write access to
that signer's host (separate machines, usually run by separate people); the gateway holds neither.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from signer.ceremony.envelope import Clock, utc_now
from signer.ceremony.errors import CeremonyError

log = logging.getLogger(__name__)

APPROVALS_DIR = "approvals"
ACTION = "replace_existing_key"
VERSION = 1
DEFAULT_VALIDITY = datetime.timedelta(hours=1)
# An approval is for one planned ceremony, not a standing permission.
MAX_VALIDITY = datetime.timedelta(days=1)
_KID = re.compile(r"[A-Za-z0-9_-]{1,128}")  # an RFC 7638 thumbprint is 43 base64url characters
_FIELDS = frozenset({"version", "action", "kid", "created_at", "expires_at"})


class ReplaceNotApproved(CeremonyError):
    """A ceremony would destroy key `kid` here, and no valid local approval allows it."""

    def __init__(self, kid: str, problem: str, command: str) -> None:
        self.kid = kid
        self.problem = problem
        self.command = command
        super().__init__(
            f"replace_existing_key would destroy key {kid} here and is not approved: {problem}; "
            f"the operator of this signer's host approves it with `{command}`"
        )


@dataclass(frozen=True, slots=True)
class Approval:
    kid: str
    created_at: datetime.datetime
    expires_at: datetime.datetime

    def encode(self) -> bytes:
        document = {
            "version": VERSION,
            "action": ACTION,
            "kid": self.kid,
            "created_at": _timestamp(self.created_at),
            "expires_at": _timestamp(self.expires_at),
        }
        return json.dumps(document, indent=2).encode() + b"\n"

    @classmethod
    def decode(cls, data: bytes) -> Approval:
        """Parse an approval file; ValueError says what is wrong with it."""
        try:
            document = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not JSON ({exc})") from None
        if not isinstance(document, dict) or set(document) != _FIELDS:
            raise ValueError(f"expected exactly the fields {sorted(_FIELDS)}")
        if document["version"] != VERSION or document["action"] != ACTION:
            raise ValueError(f"not a version {VERSION} {ACTION} approval")
        kid = document["kid"]
        if not isinstance(kid, str) or not _KID.fullmatch(kid):
            raise ValueError("kid is not a key id")
        created_at = _parse_timestamp(document["created_at"], "created_at")
        expires_at = _parse_timestamp(document["expires_at"], "expires_at")
        if expires_at <= created_at:
            raise ValueError("expires_at is not after created_at")
        return cls(kid, created_at, expires_at)


def check_kid(kid: str) -> str:
    if not _KID.fullmatch(kid):
        raise CeremonyError(f"{kid!r} is not a key id (base64url, as `kid` in the JWKS)")
    return kid


class ReplaceApprovals:
    """The approvals directory of one signer: written by `approve`, read and consumed by it."""

    def __init__(self, state_dir: Path, *, clock: Clock = utc_now) -> None:
        self.state_dir = state_dir
        self.directory = state_dir / APPROVALS_DIR
        self._clock = clock

    def path(self, kid: str) -> Path:
        return self.directory / f"replace-{check_kid(kid)}.json"

    def command(self, kid: str) -> str:
        # `--kid=` keeps a kid that begins with "-" (base64url allows it) from reading as an option.
        return f"signer approve-replace --state-dir {self.state_dir} --kid={kid}"

    def approve(
        self, kid: str, *, valid_for: datetime.timedelta = DEFAULT_VALIDITY
    ) -> tuple[Path, Approval]:
        """Write (or overwrite) the approval for `kid`, atomically; only its owner may write it."""
        if not datetime.timedelta(0) < valid_for <= MAX_VALIDITY:
            raise CeremonyError(
                f"an approval is valid for 1 to {int(MAX_VALIDITY.total_seconds())} seconds, "
                f"not {int(valid_for.total_seconds())}"
            )
        now = self._clock().replace(microsecond=0)
        approval = Approval(check_kid(kid), now, now + valid_for)
        self.directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        path = self.path(kid)
        partial = path.with_name(path.name + ".partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as out:
            out.write(approval.encode())
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, path)
        return path, approval

    def require(self, kids: Iterable[str]) -> tuple[str, ...]:
        """Every one of `kids` has a valid approval here, or ReplaceNotApproved names the first."""
        kids = tuple(sorted(set(kids)))
        for kid in kids:
            problem = self._problem(kid)
            if problem is not None:
                raise ReplaceNotApproved(kid, problem, self.command(kid))
        return kids

    def consume(self, kids: Iterable[str]) -> None:
        """Delete the approvals for `kids`, whose keys are gone: one approval, one replacement."""
        for kid in kids:
            path = self.path(kid)
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.error("could not delete the used approval %s: %s; delete it by hand", path, exc)
                continue
            log.info("used and deleted the approval to replace key %s (%s)", kid, path)

    def _problem(self, kid: str) -> str | None:
        path = self.path(kid)
        try:
            info = path.lstat()
        except FileNotFoundError:
            others = self._approved_kids()
            found = f" (approvals here name only {others})" if others else ""
            return f"no approval at {path}{found}"
        except OSError as exc:
            return f"cannot read {path}: {exc.strerror}"
        if not stat.S_ISREG(info.st_mode):
            return f"{path} is not a regular file"
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return f"{path} is writable by other users than its owner"
        try:
            approval = Approval.decode(path.read_bytes())
        except OSError as exc:
            return f"cannot read {path}: {exc.strerror}"
        except ValueError as exc:
            return f"the approval at {path} is malformed: {exc}"
        if approval.kid != kid:
            return f"the approval at {path} names key {approval.kid}, not {kid}"
        now = self._clock()
        if approval.expires_at <= now:
            return f"the approval at {path} expired at {_timestamp(approval.expires_at)}"
        if approval.expires_at - now > MAX_VALIDITY:
            return (
                f"the approval at {path} is valid until {_timestamp(approval.expires_at)}, "
                f"longer than {int(MAX_VALIDITY.total_seconds())} seconds from now"
            )
        return None

    def _approved_kids(self) -> list[str]:
        try:
            names = sorted(p.name for p in self.directory.iterdir())
        except OSError:
            return []
        return [n[len("replace-") : -len(".json")] for n in names if _is_approval_name(n)]


def _is_approval_name(name: str) -> bool:
    return (
        name.startswith("replace-")
        and name.endswith(".json")
        and bool(_KID.fullmatch(name[len("replace-") : -len(".json")]))
    )


def _timestamp(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_timestamp(value: object, name: str) -> datetime.datetime:
    if not isinstance(value, str):
        raise ValueError(f"{name} is not a timestamp string")
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name} {value!r} is not an ISO 8601 timestamp") from None
    if moment.tzinfo is None:
        raise ValueError(f"{name} {value!r} has no time zone")
    return moment
