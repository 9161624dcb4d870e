"""The error types emoknn raises for problems a user can fix.

Every message names the file or value at fault and what was expected. The command line prints
these as one line with no traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class EmoknnError(Exception):
    """Base class of every user-facing emoknn error."""


class AudioError(EmoknnError, ValueError):
    """An audio file or array cannot be used: missing, unreadable, empty, too short, non-finite."""


class CorpusError(EmoknnError, ValueError):
    """A corpus directory or manifest does not have the expected layout or content."""


class FoldError(EmoknnError, ValueError):
    """Speaker-independent folds cannot be built, or a fold mixes speakers across splits."""


class ConfigError(EmoknnError, ValueError):
    """A parameter value is out of range or inconsistent with another."""


class ModelFolderError(EmoknnError, ValueError):
    """A file of a model folder is missing, incomplete, or not what emoknn wrote."""
