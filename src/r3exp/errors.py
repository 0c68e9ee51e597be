"""Errors that the command line reports as one clear line instead of a stack trace."""


class R3Error(RuntimeError):
    """Base class: a problem with the user's input or environment, explained in the message."""


class ModelUnavailable(R3Error):
    """Model weights or tokenizer cannot be loaded (no hub access, gated repo, wrong path)."""


class ConfigError(R3Error):
    """A config value is invalid; the message names the key."""


class RankFailed(R3Error):
    """Another rank of this run exited with a non-zero code (its own error is in its output)."""

    def __init__(self, exit_code: int):
        super().__init__(f"another rank exited with code {exit_code}")
        self.exit_code = exit_code


class MissingExtra(R3Error):
    """The config needs a package of an optional extra that is not installed (``r3exp.extras``)."""
