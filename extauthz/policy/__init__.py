"""The authorize step: policy maps a verified identity and a route to a Grant, or a Denial.

- `loader`: JSON policy -> compiled, indexed, frozen `Policy` (errors name file and JSON path).
- `engine`: `PolicyEngine.evaluate(AuthzRequest) -> Grant | Denial`; every rule must pass.
- `rego`: optional Rego decision (regopy) over opa-envoy-plugin's input (`rego_input`), in
  either decision shape (`rego_decision`); with a JSON policy it can only narrow.
- `reload`: `PolicyStore`, the policy in force, swapped atomically when its file changes.

The file format is documented in `policy/README.md` at the repository root.
"""

from extauthz.policy.attributes import NO_ATTRIBUTES, RequestAttributes
from extauthz.policy.engine import PolicyEngine, Verdict, evaluate_policy
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
from extauthz.policy.rego import (
    PolicyHeaders,
    PolicyResponse,
    RegoEvaluationError,
    RegoPolicy,
    build_input,
)
from extauthz.policy.reload import PolicyStore, ReloadOutcome, ReloadResult

__all__ = [
    "NO_ATTRIBUTES",
    "AuthzRequest",
    "Decision",
    "Denial",
    "DenyReason",
    "Limits",
    "Policy",
    "PolicyEngine",
    "PolicyError",
    "PolicyHeaders",
    "PolicyResponse",
    "PolicyStore",
    "RegoEvaluationError",
    "RegoPolicy",
    "ReloadOutcome",
    "ReloadResult",
    "RequestAttributes",
    "Verdict",
    "build_input",
    "evaluate_policy",
    "load_policy_file",
    "parse_policy",
]
