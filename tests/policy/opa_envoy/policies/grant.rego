# An object decision that names keymint's grant: with KEYMINT_REGO_ALONE, the policy itself says
# which audience the token is for, with which scopes, for how long.
package envoy.authz

import rego.v1

default allow := {"allowed": false}

allow := {
	"allowed": true,
	"audience": "https://deploy.internal",
	"scopes": ["deploy:read"],
	"ttl_seconds": 120,
} if {
	input.attributes.request.http.method == "GET"
}
