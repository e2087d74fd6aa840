"""keymint signer: everything threshold.

`signer.frost` is the sans-IO RFC 9591 core. Around it live the signer service, the coordinator,
share vaults and the guard protocol. This package never imports `extauthz`.
"""

from signer.runtime import grpc_defaults as _grpc_defaults

_grpc_defaults()  # before any module of this package imports grpc (signer.runtime says why)
