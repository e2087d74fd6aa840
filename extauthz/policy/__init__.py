"""The authorize step: policy maps a verified identity and a route to a Grant, or a Denial.

- `loader`: JSON policy -> compiled, indexed, frozen `Policy` (errors name file and JSON path).
- `engine`: `PolicyEngine.evaluate(AuthzRequest) -> Grant | Denial`; every rule must pass.
- `rego`: optional Rego decision (regopy) over an OPA-Envoy-shaped input; it can only narrow.
- `reload`: `PolicyStore`, the policy in force, swapped atomically when its file changes.

The file format is documented in `policy/README.md` at the repository root.
"""

from extauthz.policy.engine import PolicyEngine, evaluate_policy
from extauthz.policy.loader import load_policy_file, parse_policy
from extauthz.policy.model import (
    AuthzRequest,
    Decision,
    Denial,
    DenyReason,
    Limits,
    Policy,
    PolicyError,
)
from extauthz.policy.rego import PolicyHeaders, RegoEvaluationError, RegoPolicy, build_input
from extauthz.policy.reload import PolicyStore, ReloadOutcome, ReloadResult

__all__ = [
    "AuthzRequest",
    "Decision",
    "Denial",
    "DenyReason",
    "Limits",
    "Policy",
    "PolicyEngine",
    "PolicyError",
    "PolicyHeaders",
    "PolicyStore",
    "RegoEvaluationError",
    "RegoPolicy",
    "ReloadOutcome",
    "ReloadResult",
    "build_input",
    "evaluate_policy",
    "load_policy_file",
    "parse_policy",
]
