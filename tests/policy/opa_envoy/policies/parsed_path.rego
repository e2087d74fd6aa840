# parsed_path: the public part of the orders API, one level deep.
package envoy.authz

import rego.v1

default allow := false

allow if {
	input.parsed_path[0] == "orders"
	input.parsed_path[1] == "public"
	count(input.parsed_path) == 3
}
