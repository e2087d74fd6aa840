# Role-based access from HTTP basic auth, as in opa-envoy-plugin's tutorials: guests read, admins
# write. Needs the authorization header: KEYMINT_POLICY_CREDENTIAL_HEADERS=authorization.
package envoy.authz

import rego.v1

import input.attributes.request.http as http_request

default allow := false

# sha256 of each password: "password" for alice, "s3cret" for bob.
users := {
	"alice": {"role": "guest", "password_sha256": "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"},
	"bob": {"role": "admin", "password_sha256": "1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0"},
}

role_permissions := {
	"guest": [{"method": "GET"}],
	"admin": [{"method": "GET"}, {"method": "POST"}],
}

credentials := split(base64.decode(substring(http_request.headers.authorization, count("Basic "), -1)), ":")

user_name := credentials[0]

allow if {
	user := users[user_name]
	crypto.sha256(credentials[1]) == user.password_sha256
	some permission in role_permissions[user.role]
	permission.method == http_request.method
}
