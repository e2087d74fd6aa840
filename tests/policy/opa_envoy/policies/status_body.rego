# A denial with its own status, body and headers: an API key, or a 401 that asks for one.
package envoy.authz

import rego.v1

default allow := {
	"allowed": false,
	"http_status": 401,
	"body": "Unauthorized Request",
	"headers": {"www-authenticate": "ApiKey realm=\"orders\""},
}

allow := {"allowed": true} if {
	input.attributes.request.http.headers["x-api-key"] == "open-sesame"
}
