# A boolean decision, as opa-envoy-plugin's quick start writes it: reads only.
package envoy.authz

import rego.v1

default allow := false

allow if {
	input.attributes.request.http.method == "GET"
	startswith(input.attributes.request.http.path, "/orders/")
}
