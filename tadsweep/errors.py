"""Errors that reach the user as one line naming the file and the key or entry."""


class InputError(ValueError):
    """A bad input file (annotation, detections, log); the message names the file and entry."""


class ConfigError(ValueError):
    """A bad study config; the message names the file and the key."""
