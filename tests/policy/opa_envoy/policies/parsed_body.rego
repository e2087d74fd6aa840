# parsed_body: small refunds only, and only when the whole body was seen.
package envoy.authz

import rego.v1

default allow := false

allow if {
	input.attributes.request.http.method == "POST"
	not input.truncated_body
	input.parsed_body.kind == "refund"
	input.parsed_body.amount <= 100
}
