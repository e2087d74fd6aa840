# parsed_query: a summary view only, asked for once.
package envoy.authz

import rego.v1

default allow := false

allow if input.parsed_query.view == ["summary"]
