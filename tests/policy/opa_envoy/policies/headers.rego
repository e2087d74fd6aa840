# Headers added for the upstream and for the caller, and a header removed from the request.
package envoy.authz

import rego.v1

default allow := {"allowed": false}

allow := {
	"allowed": true,
	"headers": {"x-ext-auth-allow": "yes", "x-ext-auth-caller": input.attributes.source.principal},
	"request_headers_to_remove": ["x-internal-debug"],
	"response_headers_to_add": {"x-ext-auth-policy": "headers.rego"},
} if {
	input.attributes.request.http.method == "GET"
}
