# The caller's bearer token, verified and decoded by the policy, as opa-envoy-plugin's JWT
# examples do: only named deployers, and only with POST. Needs the authorization header
# (KEYMINT_POLICY_CREDENTIAL_HEADERS=authorization). ${ISSUER_JWKS} and ${AUDIENCE} are the CI
# issuer's keys and keymint's OIDC audience, filled in when the test writes the policy.
package envoy.authz

import rego.v1

default allow := false

jwks := `${ISSUER_JWKS}`

bearer_token := token if {
	[scheme, token] := split(input.attributes.request.http.headers.authorization, " ")
	lower(scheme) == "bearer"
}

claims := payload if {
	[valid, _, payload] := io.jwt.decode_verify(bearer_token, {"cert": jwks, "aud": "${AUDIENCE}"})
	valid
}

deployers := {"octocat"}

allow if {
	input.attributes.request.http.method == "POST"
	claims.actor in deployers
}
