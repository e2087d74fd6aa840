"""The one exception root of the `extauthz` package."""


class ExtAuthzError(Exception):
    """Root of every error raised by the gateway package."""
