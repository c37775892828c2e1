"""Exceptions that mean "the user must fix something": the CLI prints them in one line and exits non-zero.

Anything else is a bug and keeps its traceback.
"""


class SplitbenchError(Exception):
    """Base for errors caused by input (configs, names, files, bitstreams), not by splitbench itself."""


class ConfigError(SplitbenchError, ValueError):
    """A config file or override is invalid; the message names the key and what is allowed."""


class CheckpointError(SplitbenchError):
    """A checkpoint is missing, unreadable, or does not match the model it is loaded into."""
