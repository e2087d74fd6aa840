"""`extauthz login`: an engineer self-mints a short-lived, scoped keymint token.

1. Sign in at the organisation's IdP: the device authorization grant (RFC 8628, `idp.DeviceFlow`)
   or the authorization code grant with PKCE on a loopback redirect (RFC 7636 and RFC 8252,
   `idp.PkceFlow` with `loopback.LoopbackReceiver`); or, silently, the IdP's refresh token from
   the OS keyring (`store`).
2. Exchange the ID token at keymint's `/token` (RFC 8693) for the audience and scopes asked for.
3. Print the token, or write it to a file only its owner can read, and say how long it lives.

The IdP's refresh token is kept only in the OS keyring (the `keyring` package's system backends),
or nowhere: never in a file, an environment variable or a log line.
"""
