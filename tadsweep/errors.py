"""Errors that reach the user as one line naming the file and the key or entry."""


class InputError(ValueError):
    """A bad input file or config: one line naming the file and the entry (exit 2, no traceback)."""

    MAX_CHARS = 600

    def __init__(self, message: str):
        # one line, capped: callers embed multi-line exception texts, validators whole values
        text = " ".join(str(message).split())
        if len(text) > self.MAX_CHARS:
            text = text[: self.MAX_CHARS - 20] + " ... (cut)"
        super().__init__(text)


class ConfigError(InputError):
    """A bad study config; the message names the file and the key."""


class StepFailed(RuntimeError):
    """A step that ran and failed (not bad input): one line naming what failed and its log."""
