"""The one exception root of the `signer` package."""


class SignerError(Exception):
    """Root of every error raised by the signer package."""
