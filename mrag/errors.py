"""The mrag exception family: errors a user can act on, with messages that say how."""

from __future__ import annotations


class MragError(Exception):
    """Base class for errors caused by input or configuration, not by a bug in mrag."""


class ConfigError(MragError, ValueError):
    """A configuration value is missing, of the wrong type, or out of range."""


class SourceNotFoundError(MragError, FileNotFoundError):
    """A source folder, prefix or file named by the user does not exist."""


class TableNotFoundError(MragError, LookupError):
    """The database has no such mrag table (nothing was ingested into it yet)."""


class WeightsNotFoundError(MragError):
    """A model's weights could not be found in any of the places a spec allows."""


class DecodeError(MragError):
    """A media object could not be decoded; it becomes an ``errors`` row, never a crash.

    ``error_class`` is what the ``errors`` table records (``EmptyObject``,
    ``DecompressionBombError``, ``UnidentifiedImageError``…), so failures can be counted by kind.
    """

    def __init__(self, message: str, *, error_class: str = "DecodeError") -> None:
        super().__init__(message)
        self.error_class = error_class
