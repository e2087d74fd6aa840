"""The local stack, for development only: `keymint dev` (extauthz.dev.cli).

Everything keymint runs in production, on this machine, on loopback: a development CA, n signer
processes (a trusted dealer's shares, or a DKG among them), the gateway, the front Envoy and the
upstream-side jwt_authn Envoy, an echo API behind them, and stand-ins for the identity providers
callers hold credentials from (GitHub Actions, a Kubernetes cluster, GitLab CI, SPIRE, an IdP for
engineers). `make demo`, the tests and the benchmarks run on it; `replicas` runs several gateway
replicas sharing one Redis instead (bench-e2e, the replica and fault tests). Nothing here is for
production: its keys are made on this machine and its key shares are sealed with a passphrase.
"""
