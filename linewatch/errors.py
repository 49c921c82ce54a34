"""One root exception and the two kinds of failure a stream processor must tell apart.

Bad data is the sender's problem: the message goes to the dead-letter topic with its
reason and the agent goes on. Unavailable infrastructure is ours: retry with backoff,
then stop loudly so the supervisor restarts the worker. Mixing the two either loses
messages or crash-loops on one poison record.
"""


class LinewatchError(Exception):
    """Root of every error linewatch raises on purpose."""


class DataError(LinewatchError):
    """An input that cannot be decoded or validated; dead-letter it and continue."""


class InfrastructureError(LinewatchError):
    """A broker, database or file system that is not there; retry, then stop loudly."""


class ConfigError(LinewatchError):
    """A setting that cannot work; the message says which one and what to set instead."""


class NotFittedError(LinewatchError, ValueError):
    """A detector or calibrator was asked to score before it learned what normal looks like."""
