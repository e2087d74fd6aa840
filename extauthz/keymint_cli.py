"""`keymint`: one command for the gateway, the signers and the tools.

    keymint serve [--workers N] [--config FILE]     # the gateway
    keymint signer serve|dkg|refresh|reshare|...    # a signer and its key ceremonies
    keymint exchange|login|token-info|verify|pin-keys|audit|policy|check-config ...
    keymint dev --dir DIR                           # the local stack, for development

`keymint X` is `extauthz X` (same arguments, same exit codes), and `keymint signer X` is
`signer X`: those two commands stay, as aliases.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from extauthz import cli


def main(argv: Sequence[str] | None = None) -> int:
    summary = (__doc__ or "").split("\n\n")[0]
    return cli.main(argv, prog="keymint", with_signer=True, description=summary)


if __name__ == "__main__":
    sys.exit(main())
