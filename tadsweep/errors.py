"""Errors that reach the user as one line naming the file and the key or entry."""

import sys


class InputError(ValueError):
    """A bad input file (annotation, detections, log) or config.

    The message is always one line that names the file and the offending entry, so command-line
    tools can print it to stderr and exit 2 without a traceback.
    """

    def __init__(self, message: str):
        # Collapse newlines: callers may embed exception texts that span lines.
        super().__init__(" ".join(str(message).split()))


class ConfigError(InputError):
    """A bad study config; the message names the file and the key."""


def run_cli(main, argv=None) -> int:
    """Run ``main(argv)``; turn an InputError into one stderr line and exit status 2."""
    try:
        return main(argv) or 0
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
