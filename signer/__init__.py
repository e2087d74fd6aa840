"""keymint signer: everything threshold.

`signer.frost` is the sans-IO RFC 9591 core. Around it live the signer service, the coordinator,
share vaults and the guard protocol. This package never imports `extauthz`.
"""
