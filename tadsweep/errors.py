"""Errors that reach the user as one line naming the file and the key or entry."""


class InputError(ValueError):
    """A bad input file (annotation, detections, log) or config.

    The message is always one line that names the file and the offending entry, so command-line
    tools can print it to stderr and exit 2 without a traceback.
    """

    MAX_CHARS = 600

    def __init__(self, message: str):
        # Collapse newlines: callers may embed exception texts that span lines; cap the length:
        # a validator may quote a whole (expanded) value.
        text = " ".join(str(message).split())
        if len(text) > self.MAX_CHARS:
            text = text[: self.MAX_CHARS - 20] + " ... (cut)"
        super().__init__(text)


class ConfigError(InputError):
    """A bad study config; the message names the file and the key."""


class StepFailed(RuntimeError):
    """A step that ran and failed (not bad input): one line naming what failed and its log."""
