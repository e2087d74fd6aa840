"""Prometheus metrics of threshold signing, registered once per process."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

SIGNER_UP = Gauge(
    "keymint_signer_up", "1 while the coordinator considers the signer usable", ["signer"]
)
SIGNER_FAULTS = Counter(
    "keymint_signer_faults_total",
    "Signer faults seen by the coordinator (down, slow, invalid share, restarted)",
    ["signer", "reason"],
)
COMMITMENT_POOL = Gauge(
    "keymint_commitment_pool", "Unused nonce commitments held for the signer", ["signer"]
)
THRESHOLD_SIGNATURES = Counter(
    "keymint_threshold_signatures_total", "Threshold signatures by result", ["result"]
)
THRESHOLD_SIGN_SECONDS = Histogram(
    "keymint_threshold_sign_seconds",
    "Time to a verified threshold signature, retries included",
    buckets=(0.001, 0.002, 0.003, 0.005, 0.008, 0.013, 0.021, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
KEY_PACKAGES_IGNORED = Gauge(
    "keymint_key_packages_ignored",
    "Group key packages signers report that the coordinator's last adoption ignored, by reason "
    "(too_few_signers, threshold_below_deployment)",
    ["reason"],
)
QUORUM_USABLE = Gauge(
    "keymint_quorum_signers_usable",
    "Signers that could sign with the active key right now (up, holding it, nonces ready)",
)
QUORUM_NEEDED = Gauge(
    "keymint_quorum_signers_needed", "Signers a signature with the active key needs (its t)"
)
AUDIT_WRITE_FAILURES = Counter(
    "keymint_audit_write_failures_total",
    "Audit records that could not be made durable (each failed batch counts its records)",
)
