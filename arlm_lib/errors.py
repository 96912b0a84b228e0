"""Exceptions raised by arlm_lib.

Every error a user can trigger with bad input is an :class:`ArlmError`. The message names the bad
value and what is allowed, so the CLI can print it as one line and exit non-zero.
"""

from __future__ import annotations


class ArlmError(Exception):
    """Base class for every error arlm_lib raises on purpose."""


class ConfigError(ArlmError, ValueError):
    """A hyperparameter, preset or flag has a value that is not allowed."""


class DataError(ArlmError, ValueError):
    """A corpus is missing, empty, too short, or not valid UTF-8."""


class TokenizerError(ArlmError, ValueError):
    """Text cannot be encoded, or a tokenizer file is invalid."""


class CheckpointError(ArlmError):
    """A checkpoint is missing, corrupted, from another architecture, or would clobber a run."""


class NotWritableError(ArlmError):
    """A run directory cannot be created or written (a read-only filesystem, no write permission).

    Not a CheckpointError: callers that wait out a run directory in use by another run (the zoo) must
    not wait for this one, which no waiting fixes."""


class DeviceError(ArlmError):
    """The requested device is unknown or not available on this machine."""


class TrainingDivergedError(ArlmError):
    """The loss became NaN or infinite; the message names the step."""


class GenerationError(ArlmError, ValueError):
    """A decoding parameter is out of range."""
