"""The gateway process (`keymint serve`): its edges (the ext_authz Check port, the HTTP edge with
`/token`, the JWKS and the admin API), the Check pipeline (identify, authorize, mint, respond), the
caches, minting through the signers, the key ring, and the state replicas share."""
