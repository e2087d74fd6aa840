"""keymint gateway: Envoy ext_authz and RFC 8693 token exchange over threshold-signed tokens."""
