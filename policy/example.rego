# Example Rego policy for keymint, evaluated after policy/example.json: the JSON policy decides
# who gets which grant, this policy must also allow, and it may only narrow the grant.
#
# The input is shaped like OPA-Envoy's (input.attributes.request.http, input.parsed_path,
# input.parsed_query, input.attributes.context_extensions), plus input.identity, input.requested
# and input.grant. Credential headers (authorization, x-forwarded-client-cert, cookie) are
# never in it.
package keymint.authz

import rego.v1

default allow := false

method := input.attributes.request.http.method

# Reads: whatever the JSON policy grants.
allow if method in {"GET", "HEAD"}

# RFC 8693 token exchange at the gateway itself (the CI client): the JSON policy decides.
allow if {
	method == "POST"
	input.parsed_path == ["token"]
}

# Charges only from the checkout namespace, only on /v1/charges.
allow if {
	method == "POST"
	input.parsed_path[0] == "v1"
	input.parsed_path[1] == "charges"
	startswith(input.identity.spiffe_id, "spiffe://prod.example.com/ns/checkout/")
}

# CI writes one service's deployment at a time: /api/deployments/<service>.
allow if {
	method in {"POST", "PUT"}
	input.identity.kind == "github_actions"
	input.parsed_path[0] == "api"
	input.parsed_path[1] == "deployments"
	count(input.parsed_path) == 3
	input.parsed_path[2] != ""
}

# A dry run needs no write scope: narrow the grant to read.
scopes := ["deploy:read"] if input.parsed_query.dry_run == ["true"]

# CI tokens live at most 5 minutes, like the OIDC token they were exchanged for.
ttl_seconds := 300 if input.identity.kind == "github_actions"

reason := sprintf("example.rego does not allow %s on this path", [method]) if not allow
