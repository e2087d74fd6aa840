# An object decision: `allowed`, with dynamic metadata for Envoy's access log.
package envoy.authz

import rego.v1

default allow := {"allowed": false}

allow := {
	"allowed": true,
	"dynamic_metadata": {"policy": "object.rego", "method": input.attributes.request.http.method},
} if {
	input.attributes.request.http.method in {"GET", "HEAD"}
}
