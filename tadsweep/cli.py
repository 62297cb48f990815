"""The one convention of tadsweep's commands, `python -m tadsweep.<stage>.<module>`: argparse (with
subcommands where a module does several things); each module defines `main(argv) -> int` and ends
with `cli.run(main)`. Only here do exceptions become exit statuses:

- InputError (a bad config, path or file; the message names the file and the key) -> 2
- StepFailed (a step ran and failed, e.g. OpenTAD's training exited non-zero) -> 1
- Ctrl-C -> 130

Each prints one `error: ...` line on stderr, no traceback.
"""

from __future__ import annotations

import sys

from tadsweep.errors import InputError, StepFailed


def status(main, argv=None) -> int:
    """Exit status of `main(argv)` under the convention above."""
    try:
        return main(argv) or 0
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except StepFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def run(main) -> None:
    """Entry point of a `python -m` module."""
    sys.exit(status(main))
