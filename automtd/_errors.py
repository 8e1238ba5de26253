"""The exception hierarchy of automtd.

Every error a user can cause is an :class:`AutomtdError` (or one of its few
subclasses).  Its message is one line that names the value received, what is
allowed and how to fix it.  The CLI maps each class to its own exit code
(``exit_code``) and prints only the message unless ``--debug`` is given.
"""

from __future__ import annotations

__all__ = [
    "AutomtdError",
    "ConfigError",
    "RankError",
    "DataError",
    "CheckpointError",
    "PlanMismatchError",
    "StorageError",
    "StudyError",
    "DecompositionError",
]


class AutomtdError(Exception):
    """Root of every error automtd raises on purpose."""

    exit_code: int = 1


class ConfigError(AutomtdError, ValueError):
    """A config file, config key, CLI value or YAML document is invalid."""

    exit_code = 2


class RankError(ConfigError):
    """A method, rank or fraction is invalid for a given layer."""

    exit_code = 3


class DataError(AutomtdError):
    """A dataset cannot be found, read or split as asked."""

    exit_code = 4


class CheckpointError(AutomtdError):
    """A checkpoint is missing, corrupt, unsafe to load or does not fit the model."""

    exit_code = 5


class PlanMismatchError(AutomtdError):
    """A compression plan was made for another model."""

    exit_code = 6


class StorageError(AutomtdError):
    """A study storage cannot be reached or may not be used this way."""

    exit_code = 7


class StudyError(AutomtdError):
    """A study does not exist, has another spec, or holds no matching trial."""

    exit_code = 8


class DecompositionError(AutomtdError):
    """A decomposition produced non-finite or degenerate factors."""

    exit_code = 9
