# A careless denial: its reason and its dynamic metadata quote the caller's authorization header,
# raw, decoded (basic auth) and its password alone. keymint must keep every form of the
# credential out of its logs and audit records. Needs KEYMINT_POLICY_CREDENTIAL_HEADERS.
package envoy.authz

import rego.v1

authorization := input.attributes.request.http.headers.authorization

decoded := base64.decode(substring(authorization, count("Basic "), -1)) if {
	startswith(authorization, "Basic ")
} else := "-"

parts := split(decoded, ":")

password := parts[1] if {
	count(parts) > 1
} else := "-"

allow := {
	"allowed": false,
	"reason": sprintf("refused %s, that is %s, password %s", [authorization, decoded, password]),
	"dynamic_metadata": {"credential": authorization, "decoded": decoded, "password": password},
}
